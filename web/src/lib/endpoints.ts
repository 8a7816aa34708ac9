/**
 * Where an account can be reached, as its sigchain's first events say
 * (the design's account creation: "first event: add_endpoint advertising
 * the NATS broker the app will use"). With a NATS WebSocket advertised by
 * the home server, the first event names it with the account's inbox
 * subject; the chat-server's HTTPS endpoint follows (or comes first and
 * alone when the server has no NATS).
 */
export type EndpointBody = Record<string, string>;

export function startingEndpoints(publicHex: string, origin: string, fqhn: string, natsWs: string | null): EndpointBody[] {
  const https = { id: 'chat-https', protocol: 'https', url: origin, inbox: fqhn };
  if (!natsWs) return [https];
  // the same endpoint id the CLI publishes for its NATS inbox
  return [{ id: 'nats', protocol: 'nats', url: natsWs, inbox: `kez.inbox.${publicHex}` }, https];
}
