// CPU of compressing one compacted page (brotli, quality 5) at the default window, with a size hint, and with
// a window no larger than the page, measured one page at a time between bursts of short-lived allocations,
// as in a server (a tight loop reuses the encoder's freed memory and hides the cost).
//   node bench/passes/2026-12-05b-amd-epyc/brotli-window.mjs
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { brotliCompressSync, constants as c } from 'node:zlib';

const delta = (i) =>
  JSON.stringify({
    type: 'text-delta',
    id: 'txt_0123456789abcdefghijklmnopqrstuvw',
    delta: `s1t${String(i).padStart(3, '0')} `,
  });
const page = (bytes) => {
  const lines = [];
  for (let n = 0; n < bytes; n += lines.at(-1).length + 1) lines.push(delta(lines.length));
  return lines.join('\n');
};
const windowBits = (bytes) =>
  Math.min(c.BROTLI_DEFAULT_WINDOW, Math.max(c.BROTLI_MIN_WINDOW_BITS, Math.ceil(Math.log2(bytes + 1))));
const variants = {
  'default window': () => ({}),
  'size hint': (bytes) => ({ [c.BROTLI_PARAM_SIZE_HINT]: bytes }),
  'window ≤ page + hint': (bytes) => ({
    [c.BROTLI_PARAM_LGWIN]: windowBits(bytes),
    [c.BROTLI_PARAM_SIZE_HINT]: bytes,
  }),
};
let sink = 0;
console.log(`node ${process.version}; µs of CPU per page, mean of 1,500 (output bytes)`);
for (let round = 1; round <= 3; round++) {
  for (const size of [400, 1500, 16 * 1024]) {
    const text = page(size);
    const bytes = Buffer.byteLength(text);
    const cells = [];
    for (const [name, params] of Object.entries(variants)) {
      const options = { params: { [c.BROTLI_PARAM_QUALITY]: 5, ...params(bytes) } };
      let micros = 0;
      let out = 0;
      for (let i = 0; i < 1500; i++) {
        for (let j = 0; j < 20; j++)
          sink += Buffer.alloc(8192 * (1 + (j % 5))).length + JSON.stringify({ i, j }).length;
        const before = process.cpuUsage();
        out = brotliCompressSync(text, options).length;
        const used = process.cpuUsage(before);
        micros += used.user + used.system;
      }
      cells.push(`${name} ${(micros / 1500).toFixed(0)} (${out})`);
    }
    console.log(`round ${round}, page of ${bytes} B: ${cells.join(', ')}`);
  }
}
if (sink < 0) console.log(sink);
