/**
 * What the Outrun server, the typed client, the React hook and the web app share (DESIGN §2): the wire
 * types, the run stream's chunks, the message projector and SSE framing. Imports nothing from the server,
 * and nothing from `ai` at runtime, so a browser bundle stays small.
 */
export * from './run.ts';
export * from './wire.ts';
export * from './chunks.ts';
export * from './message-projector.ts';
export * from './sse.ts';
export * from './schedule.ts';
export * from './webhook.ts';
export * from './workspace.ts';
export * from './credentials.ts';
