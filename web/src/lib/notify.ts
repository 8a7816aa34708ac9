/**
 * Browser notifications for arriving messages. The title is the sender's
 * handle; the message text is shown only when the person opted in (a
 * notification can be read on a locked screen); nothing is shown for the
 * conversation the person is looking at; a click brings the window
 * forward and opens the conversation. Permission is asked only from a
 * click (the app never asks on page load).
 */
import type { Msg } from './types';

export interface NotificationApi {
  readonly permission: NotificationPermission;
  requestPermission(): Promise<NotificationPermission>;
  new (title: string, options?: NotificationOptions): Pick<Notification, 'close'> & { onclick: ((ev: Event) => unknown) | null };
}

export interface Notice {
  title: string;
  body: string;
  tag: string;
}

/** Which arriving messages deserve a notification (warnings and notes do not). */
export function worthNotifying(msg: Msg): boolean {
  return msg.dir === 'in' && (msg.kind === 'text' || msg.kind === 'file' || msg.kind === 'share');
}

/** What to show for `msg` from `fqhn`; the text only when `showText`. */
export function notice(peer: string, fqhn: string, msg: Msg, showText: boolean): Notice {
  let body = 'New message';
  if (msg.kind === 'file') body = showText ? `File: ${msg.text}` : 'Sent you a file';
  else if (msg.kind === 'share') body = showText ? `Offers ${msg.text}` : 'Offers a file';
  else if (showText) body = msg.text.length > 140 ? msg.text.slice(0, 139) + '…' : msg.text;
  // one notification per conversation: a newer one replaces it
  return { title: fqhn, body, tag: `kezchat:${peer}` };
}

export interface NotifierHooks {
  /** the person opted in to message text in notifications */
  showText: () => boolean;
  /** the person is looking at this conversation in a visible, focused window */
  looking: (peer: string) => boolean;
  /** the handle shown for a conversation */
  handleOf: (peer: string) => string | undefined;
  /** bring the window forward and open a conversation (after a click on its notification) */
  open: (peer: string) => void;
}

export function notificationApi(): NotificationApi | null {
  return typeof Notification === 'undefined' ? null : (Notification as unknown as NotificationApi);
}

export class Notifier {
  constructor(
    private readonly hooks: NotifierHooks,
    private readonly api: NotificationApi | null = notificationApi(),
  ) {}

  /** A message was stored and shown: tell the person, if they want and need it. */
  arrived(peer: string, msg: Msg): void {
    const api = this.api;
    if (!api || api.permission !== 'granted' || !worthNotifying(msg) || this.hooks.looking(peer)) return;
    const fqhn = this.hooks.handleOf(peer);
    if (fqhn === undefined) return;
    const n = notice(peer, fqhn, msg, this.hooks.showText());
    try {
      const shown = new api(n.title, { body: n.body, tag: n.tag });
      shown.onclick = () => {
        this.hooks.open(peer);
        shown.close();
      };
    } catch {
      // some browsers allow notifications only from a service worker: none then
    }
  }
}
