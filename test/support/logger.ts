import pino from 'pino';

/** A debug-level logger whose records (parsed JSON lines) a test can read. */
export function captureLogger<Extra extends object = Record<string, unknown>>() {
  const records: ({ level: number; msg: string } & Partial<Extra>)[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => records.push(JSON.parse(line)) });
  return { logger, records };
}
