export interface Account {
  handle: string;
  fqhn: string;
  primary: string;
  server: string;
  sigchainUrl?: string;
  chainStarted: boolean;
}

export interface FileInfo {
  /** the stored Blob's key: by sender and message, never a sender-chosen name */
  key: string;
  /** the id on the wire (chunked files only) */
  wireId?: string;
  /** the name as shown: invisible and reordering characters made visible */
  name: string;
  /** the type stored and offered: a raster image type or application/octet-stream */
  mime: string;
  /** the type the sender declared (outgoing files are sent with it) */
  declared?: string;
  size: number;
  n: number;
  received: number;
  state: 'receiving' | 'ready' | 'failed';
  blake3?: string;
}

/** an out-message's state: `delivered` and `read` come from the peer's receipts (receipts.ts) */
export type MsgStatus = 'sending' | 'sent' | 'delivered' | 'read' | 'failed';

export interface Msg {
  id: string;
  dir: 'in' | 'out';
  /** `warning`: a refused message, with the reason; `note`: something the app did (e.g. dropped orphan pieces) */
  kind: 'text' | 'file' | 'warning' | 'note' | 'share';
  text: string;
  /** the sort time: the server's (or the envelope's, never later than the server's) */
  ts: string;
  seq?: number;
  status?: MsgStatus;
  file?: FileInfo;
  error?: string;
  /** a peer-to-peer file offer (`file_share`): fetched with the kez-chat CLI */
  share?: { name: string; size: number; blake3: string; from: string };
  /** a failed send the server never refused: sent again when the link is back */
  transient?: boolean;
  /** an outgoing message's envelope signatures (its first part, each time it was sealed): the server's copy of it is recognised by them */
  sigs?: string[];
  /** an outgoing message another server never took (given up by our server after the retention period) */
  undeliverable?: boolean;
  /** a received message: false while no device of this account has shown it (the unread count) */
  read?: boolean;
  /** a received message: the strongest receipt a device of this account sent for it */
  told?: 'delivered' | 'read';
}

export interface Conversation {
  primary: string;
  /** the pinned handle: never taken from an inbox item's label */
  fqhn: string;
  unread: number;
  lastTs: string;
  lastText: string;
  /** the last message is one this person sent (the list says "You:") */
  lastOut?: boolean;
  /** set when a message for this handle came signed by another key */
  keyChanged?: string;
  /** that other key: the person may choose to trust it instead */
  newKey?: string;
}

/** Where refused messages that belong to no pinned conversation are kept. */
export const REFUSED = 'refused';
