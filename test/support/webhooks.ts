import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../../src/store/schema.ts';
import {
  recordWebhookDeliveries,
  subscribedWebhookIds,
  type WebhookDeliveryOptions,
} from '../../src/webhooks/webhook-service.ts';

/**
 * Records a delivery of `options.event` for every webhook subscribed to it, outside any status change: the
 * look-up a status change makes inside its own statement (`runWebhooksListener`), here a statement of its
 * own, so that tests can fill the outbox and drive the dispatcher directly. Returns how many it recorded.
 */
export async function recordWebhookEvent(
  db: Transaction<Database> | Kysely<Database>,
  options: WebhookDeliveryOptions,
): Promise<number> {
  const { rows } = await sql<{
    ids: string[];
  }>`select ${subscribedWebhookIds(options.workspaceId, options.event)} as ids`.execute(db);
  return recordWebhookDeliveries(db, rows[0]?.ids ?? [], options);
}

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  /** When the request ended (`Date.now()`). */
  at: number;
}

/** A webhook receiver on 127.0.0.1 that answers each request with `answer(n)` (n counts from 1). */
export async function startReceiver(answer: (n: number) => number = () => 200): Promise<{
  url: string;
  received: Received[];
  close: () => Promise<void>;
}> {
  const received: Received[] = [];
  const server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      received.push({ headers: request.headers, body, at: Date.now() });
      response.statusCode = answer(received.length);
      response.end(response.statusCode >= 300 ? 'receiver says no' : 'ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
