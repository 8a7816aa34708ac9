export interface Account {
  handle: string;
  fqhn: string;
  primary: string;
  server: string;
  sigchainUrl?: string;
  chainStarted: boolean;
}

export interface FileInfo {
  fileId: string;
  name: string;
  mime: string;
  size: number;
  n: number;
  received: number;
  state: 'receiving' | 'ready' | 'failed';
  blake3?: string;
}

export type MsgStatus = 'sending' | 'sent' | 'failed';

export interface Msg {
  id: string;
  dir: 'in' | 'out';
  kind: 'text' | 'file' | 'warning' | 'share';
  text: string;
  ts: string;
  seq?: number;
  status?: MsgStatus;
  /** the sealed envelopes of an outgoing message until they are all sent */
  pending?: unknown[];
  file?: FileInfo;
  error?: string;
}

export interface Conversation {
  primary: string;
  fqhn: string;
  unread: number;
  lastTs: string;
  lastText: string;
  /** set when this handle was known under another key before */
  keyChanged?: string;
}
