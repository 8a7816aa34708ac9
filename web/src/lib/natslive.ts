/**
 * NATS over WebSocket as the live transport (SPEC §5, §11.3): the browser
 * logs in to the broker through the chat-server's auth callout with its
 * KEZ key as nkey, names its device in the connection name (`kez:<device>`)
 * and reads its own durable consumer `inbox_<hex>_<device>` on KEZ_INBOX,
 * which keeps what arrives while the page is away.
 *
 * What a consumer message *is* stays with the link: a message here says
 * "something new is in your inbox" (with its envelope signature and, for
 * what the chat-server published, the stored seq) and is acknowledged
 * only once the link says it is covered — stored through the one pipeline
 * and cursor that SSE and catch-up use. So a message is never shown twice
 * nor lost between transports, and the server's seq stays the one order.
 */
import { wsconnect, type NatsConnection } from '@nats-io/nats-core';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { KeyPair } from './crypto/keys';
import { nkeyAuthenticator } from './nkey';

export const STREAM = 'KEZ_INBOX';
/** a device's consumer left unused this long is removed by the broker (and made again on return) */
const INACTIVE_NANOS = 14 * 24 * 3600 * 1e9;

/** One consumer message, as the link needs it. */
export interface Arrival {
  /** the envelope's signature, when the payload is an envelope */
  sig: string | null;
  /** the `Kez-Stored` seq the chat-server put on what it published (a hint: clients can set headers too) */
  storedSeq: number | null;
}

export interface NatsEvents {
  /** a message arrived; resolves once the link has it covered, then it is acknowledged */
  arrived(arrival: Arrival): Promise<void>;
  /** the connection dropped (the client reconnects by itself) */
  down(): void;
  /** the connection is back */
  up(): void;
  /** the connection ended for good (not by close()) */
  ended(): void;
}

export interface NatsFeed {
  close(): Promise<void>;
}

/** What `connect` needs; a test may give another opener. */
export type OpenNats = (url: string, key: KeyPair, device: string, events: NatsEvents) => Promise<NatsFeed>;

export function consumerName(hex: string, device: string): string {
  return `inbox_${hex}_${device}`;
}

/** What the link needs from one consumer message. */
export function arrivalOf(data: Uint8Array, stored: string | undefined): Arrival {
  let sig: string | null = null;
  try {
    const envelope = JSON.parse(new TextDecoder().decode(data)) as { sig?: unknown };
    if (typeof envelope?.sig === 'string') sig = envelope.sig;
  } catch {
    // not JSON: nothing to match; the link still catches up once
  }
  const seq = stored !== undefined && /^[0-9]{1,15}$/.test(stored) ? Number(stored) : null;
  return { sig, storedSeq: seq };
}

/** Log in, make sure the device's consumer exists, and follow it. */
export const openNats: OpenNats = async (url, key, device, events) => {
  const hex = key.publicHex;
  const nc: NatsConnection = await wsconnect({
    servers: url,
    name: `kez:${device}`,
    // the only reply subjects this key may subscribe to (SPEC §5)
    inboxPrefix: `_INBOX_${hex}`,
    authenticator: nkeyAuthenticator(key),
    timeout: 5000,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    // after a broker restart the callout may refuse for a moment: keep trying (SSE stands in meanwhile)
    ignoreAuthErrorAbort: true,
    pingInterval: 15_000,
  });
  let messages: ConsumerMessages | null = null;
  let closed = false;
  try {
    // checkAPI off: the account-wide $JS.API.INFO is not granted to users
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    const name = consumerName(hex, device);
    try {
      await jsm.consumers.info(STREAM, name);
    } catch {
      // absent (or removed after a long absence): made with the one filter the callout grants
      await jsm.consumers.add(STREAM, {
        durable_name: name,
        filter_subject: `kez.inbox.${hex}.>`,
        ack_policy: AckPolicy.Explicit,
        // what came before is in the inbox already: catch-up reads it
        deliver_policy: DeliverPolicy.New,
        inactive_threshold: INACTIVE_NANOS,
      });
    }
    const consumer = await jetstream(nc, { checkAPI: false }).consumers.get(STREAM, name);
    messages = await consumer.consume({ max_messages: 64 });
  } catch (e) {
    await nc.close().catch(() => undefined);
    throw e;
  }
  const feed = messages;
  void (async () => {
    for await (const m of feed as AsyncIterable<JsMsg>) {
      await events.arrived(arrivalOf(m.data, m.headers?.get('Kez-Stored') || undefined));
      if (closed) return;
      m.ack();
    }
  })().catch(() => undefined);
  void nc.closed().then(() => {
    if (!closed) events.ended();
  });
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') events.down();
      else if (s.type === 'reconnect') events.up();
    }
  })().catch(() => undefined);
  return {
    async close() {
      closed = true;
      feed.stop();
      await nc.close().catch(() => undefined);
    },
  };
};
