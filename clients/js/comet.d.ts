// Type declarations of the Comet browser client (comet.js).

/** A payload: text, or bytes for binary payloads. */
export type Data = string | Uint8Array;

export type TransportName = "websocket" | "sse" | "poll";

/** "closed": the server disconnected the client and said not to come back; only `connect()` reconnects. */
export type State = "connecting" | "connected" | "disconnected" | "reconnecting" | "closed";

export interface Options {
  /** Transports in order of preference; one that fails to open falls back to the next. Default: all three. */
  transports?: TransportName[];
  /** First reconnect delay in ms (doubled per failure, with jitter). Default 250. */
  minDelay?: number;
  /** Longest reconnect delay in ms. Default 15000. */
  maxDelay?: number;
  /** A transport that has not opened after this many ms counts as failed. Default 5000. */
  openTimeout?: number;
  /** How long the server holds a long-poll, in ms (at most 30000). Default 25000. */
  pollTimeout?: number;
  /** Disconnect while the page is hidden and resume when it is shown. Default false. */
  pauseWhenHidden?: boolean;
  /** A credential for on-subscribe on SSE and long-poll (one per request); WebSocket sends each subscription's own. */
  token?: string;
  /** Send cookies to a server on another origin over SSE and long-poll (it must allow this origin and credentials); WebSocket always sends them. Default false. */
  withCredentials?: boolean;
}

export interface Message {
  channel: string;
  data: Data;
  /** The position right after this message: subscribe with it as `since` to resume. */
  cursor: string;
  /** When the server accepted it, in ms since the Unix epoch. */
  time: number;
}

/** Messages were lost for this channel (history gone, or a new epoch after a restart). */
export interface Reset {
  channel: string;
  reason: string;
  cursor?: string;
}

export interface StateChange {
  state: State;
  transport: TransportName | null;
  /** Why the connection ended (disconnected). */
  reason?: string;
  /** Milliseconds until the next attempt (reconnecting). */
  delay?: number;
  /** The server's close code (4000-4999) when it disconnected the client (disconnected, closed). */
  code?: number | null;
}

/** The server disconnected this client on purpose (its `disconnect` command). */
export interface Disconnect {
  /** 4000-4499: the client reconnects; 4500-4999: it stays closed. Null if the server named none. */
  code: number | null;
  reason: string;
  /** True: the client reconnects with its usual backoff; false: it is in state "closed". */
  reconnect: boolean;
  transport: TransportName;
}

/** The server subscribed this connection to a channel (until `unsubscribed` or the connection ends). */
export interface ServerSubscribed {
  channel: string;
  /** Where the channel starts, before its backlog. */
  cursor: string | null;
}

/** A channel the server subscribed ended, or the server unsubscribed one of the client's own. */
export interface ServerUnsubscribed {
  channel: string;
  /** The cursor after its last message. */
  cursor: string | null;
  /** True: the server unsubscribed it; false: the connection (or the SSE request) it was on ended. */
  server: boolean;
}

export declare class CometError extends Error {
  /** The wire code (PROTOCOL.md), e.g. `denied`, `forbidden`, `rejected`, `disconnected`. */
  code: string;
  channel?: string;
  requestId?: string;
}

export declare class Subscription {
  readonly channel: string;
  /** Resolves when the server confirmed the subscription; rejects when on-subscribe denied it. */
  readonly ready: Promise<Subscription>;
  on(event: "message", fn: (m: Message) => void): () => void;
  on(event: "reset", fn: (r: Reset) => void): () => void;
  on(event: "subscribed", fn: (e: { channel: string; transport: TransportName }) => void): () => void;
  on(event: "error", fn: (e: CometError) => void): () => void;
  off(event: string, fn: (value: any) => void): void;
  unsubscribe(): Promise<boolean>;
}

export declare class Comet {
  /** @param url the server's base URL; default: the page's origin. */
  constructor(url?: string, options?: Options);
  readonly state: State | "disconnected";
  readonly transport: TransportName | null;
  /** Connect; also after the server closed the client (state "closed"). */
  connect(): this;
  /** Close and stay closed; cursors are kept, so `connect()` resumes. */
  disconnect(): void;
  /** Connects too, unless the state is "closed". */
  subscribe(channel: string, options?: { token?: string; since?: string }): Subscription;
  unsubscribe(channel: string): Promise<boolean>;
  /** The cursor after the last message received on `channel`. */
  cursor(channel: string): string | null;
  /** Publish over WebSocket (the server must allow client publishing on the channel). */
  publish(channel: string, data: Data | ArrayBuffer): Promise<{ channel: string; cursor: string }>;
  /** A custom frame for the handler's on-message (WebSocket only). */
  send(data: Data | ArrayBuffer): void;
  on(event: "message", fn: (m: Message) => void): () => void;
  on(event: "reset", fn: (r: Reset) => void): () => void;
  on(event: "state" | State, fn: (s: StateChange) => void): () => void;
  /** The server disconnected the client; see `reconnect`. */
  on(event: "disconnect", fn: (d: Disconnect) => void): () => void;
  /** The server subscribed this connection to a channel; its messages come to `message` (not resubscribed after a reconnect). */
  on(event: "subscribed", fn: (s: ServerSubscribed) => void): () => void;
  on(event: "unsubscribed", fn: (u: ServerUnsubscribed) => void): () => void;
  /** Frames sent by on-message's `send` action. */
  on(event: "frame", fn: (data: Data) => void): () => void;
  on(event: "error", fn: (e: CometError) => void): () => void;
  off(event: string, fn: (value: any) => void): void;
}

export default Comet;
