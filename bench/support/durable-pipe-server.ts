import { randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { streamText, type LanguageModel } from 'ai';
import pg from 'pg';
import { onChatRequest } from './chat-request.ts';
import { listenOnLoopback } from './environment.ts';

/**
 * The durable floor: the plain pipe (plain-pipe-server.ts) plus the least a stream needs to be durable on
 * PostgreSQL. A request inserts its stream's row (autocommit) before calling the model; every UI message chunk
 * is stringified once, numbered, and handed to one group committer shared by all streams, and its SSE frame is
 * written only after the insert holding it has committed; once the last chunk is durable the row is marked
 * `done`, then `[DONE]` ends the response.
 *
 * Deliberately left out, so that what remains is what durability itself costs: authentication, chats and
 * history, compaction, a bus for other readers, resuming, leases and fencing, retries, backpressure.
 */
export async function startDurablePipeServer(options: {
  resolveModel: (modelId: string) => LanguageModel;
  defaultModel: string;
  databaseUrl: string;
  /** How long the committer waits for more chunks once one is pending (ms). @default 2 */
  coalesceMs?: number;
}): Promise<{ url: string; server: Server; close: () => Promise<void> }> {
  // Idle connections kept a minute, as Outrun's pool keeps them (POOL_IDLE_TIMEOUT_MS in src/store/database.ts).
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10, idleTimeoutMillis: 60_000 });
  // An idle connection that is lost emits here; the pool replaces it on the next checkout.
  pool.on('error', () => {});
  await pool.query(`
    create table if not exists streams (
      id text primary key, status text not null, created_at timestamptz not null default now());
    create table if not exists stream_events (
      stream_id text not null, seq integer not null, chunk json not null, primary key (stream_id, seq));`);
  const committer = new GroupCommitter(pool, options.coalesceMs ?? 2);

  async function answer(text: string, modelId: string, response: ServerResponse): Promise<void> {
    const id = randomUUID();
    await pool.query(`insert into streams (id, status) values ($1, 'running')`, [id]);
    const result = streamText({
      model: options.resolveModel(modelId),
      messages: [{ role: 'user', content: text }],
    });
    // The headers `pipeUIMessageStreamToResponse` sends (the AI SDK's UI_MESSAGE_STREAM_HEADERS).
    response.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-vercel-ai-ui-message-stream': 'v1',
      'x-accel-buffering': 'no',
    });
    let appended = 0;
    let written = 0;
    let ended = false;
    let settle!: (error?: Error) => void;
    const allDurable = new Promise<void>(
      (resolve, reject) => (settle = (error) => (error ? reject(error) : resolve())),
    );
    for await (const chunk of result.toUIMessageStream()) {
      const json = JSON.stringify(chunk);
      committer.append(id, appended++, json, (error) => {
        if (error) return settle(error);
        // A reader that left does not stop the stream: it is durable, not theirs.
        if (!response.destroyed) response.write(`data: ${json}\n\n`);
        if (++written === appended && ended) settle();
      });
    }
    ended = true;
    if (written === appended) settle();
    await allDurable;
    await pool.query(`update streams set status = 'done' where id = $1`, [id]);
    if (!response.destroyed) response.end('data: [DONE]\n\n');
  }

  const server = createServer((request, response) => {
    onChatRequest(request, response, (input) => {
      answer(input.text, input.model ?? options.defaultModel, response).catch((error: Error) => {
        if (response.headersSent) response.destroy(error);
        else response.writeHead(500).end(error.message);
      });
    });
  });
  const url = await listenOnLoopback(server);
  return {
    url,
    server,
    close: async () => {
      await new Promise((resolve) => server.close(resolve));
      await pool.end();
    },
  };
}

interface PendingChunk {
  streamId: string;
  seq: number;
  json: string;
  /** Called once the insert holding the chunk has committed (or failed), in append order. */
  done: (error?: Error) => void;
}

/**
 * One pending list for every stream: the first chunk into an empty list starts a `coalesceMs` timer, then
 * everything pending goes in one autocommit insert. At most one insert is in flight; what arrives meanwhile
 * goes as soon as it returns. A stream that had the last insert to itself does not wait for the timer (as
 * Outrun's group commit: `EventLog.enqueue`), but for the end of the current turn of the event loop.
 */
class GroupCommitter {
  #pending: PendingChunk[] = [];
  #inFlight = false;
  #soleStreamOfLastInsert: string | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly coalesceMs: number,
  ) {}

  append(streamId: string, seq: number, json: string, done: (error?: Error) => void): void {
    this.#pending.push({ streamId, seq, json, done });
    if (this.#pending.length === 1 && !this.#inFlight) {
      if (streamId === this.#soleStreamOfLastInsert) setImmediate(() => void this.#flush());
      else setTimeout(() => void this.#flush(), this.coalesceMs);
    }
  }

  async #flush(): Promise<void> {
    const batch = this.#pending;
    this.#pending = [];
    const first = batch[0]!.streamId;
    this.#soleStreamOfLastInsert = batch.every((chunk) => chunk.streamId === first) ? first : null;
    this.#inFlight = true;
    // Each chunk's JSON goes in as it is: the batch is built around the strings, not re-serialized. Chunks,
    // stream ids and sequence numbers as three arrays zipped by `rows from`, as Outrun's group commit does:
    // PostgreSQL splits a plain array far faster than it reads an array of objects (`json_to_recordset`).
    const chunks = `[${batch.map((c) => c.json).join(',')}]`;
    const streamIds = `{${batch.map((c) => c.streamId).join(',')}}`;
    const seqs = `{${batch.map((c) => c.seq).join(',')}}`;
    let failure: Error | undefined;
    try {
      await this.pool.query({
        name: 'stream_events_insert',
        text:
          'insert into stream_events (stream_id, seq, chunk) ' +
          'select e.stream_id, e.seq, e.chunk ' +
          'from rows from (json_array_elements($1::json), unnest($2::text[]), unnest($3::int[])) ' +
          'as e(chunk, stream_id, seq)',
        values: [chunks, streamIds, seqs],
      });
    } catch (error) {
      failure = error as Error;
    }
    this.#inFlight = false;
    for (const chunk of batch) chunk.done(failure);
    if (this.#pending.length > 0) void this.#flush();
  }
}
