import { describe, expect, it } from 'vitest';
import { parseHostCpu, stealPercent } from '../bench/support/host-cpu.ts';
import {
  cellOf,
  maxStealPercent,
  printedNumber,
  printedTables,
  readPass,
} from '../bench/support/scorecard-figures.ts';
import { median, summarize } from '../bench/support/stats.ts';

// The benchmarks' own arithmetic: the scorecard's medians of rounds are read straight off it.
describe('bench statistics', () => {
  it('takes the middle value of an odd count and the mean of the two middle ones of an even count', () => {
    expect(median([1.6, 1.19, 1.22])).toBe(1.22);
    expect(median([2, 1, 4, 3])).toBe(2.5);
    expect(median([5])).toBe(5);
    expect(median([])).toBeNaN();
  });

  it('leaves its input in the order given', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });

  it('summarizes by nearest rank', () => {
    const summary = summarize([10, 20, 30, 40]);
    expect(summary).toMatchObject({ count: 4, mean: 25, p50: 20, max: 40 });
  });

  it("reads the machine's CPU time and its stolen part from /proc/stat, and the share stolen between readings", () => {
    // user nice system idle iowait irq softirq steal guest guest_nice
    const before = parseHostCpu('cpu  100 0 20 800 10 0 5 65 0 0\ncpu0 50 0 10 400 5 0 2 33 0 0\n');
    expect(before).toEqual({ total: 1000, steal: 65 });
    const after = parseHostCpu('cpu  400 0 80 1000 10 0 5 505 7 0\n');
    expect(after).toEqual({ total: 2000, steal: 505 });
    expect(stealPercent(before, after)).toBeCloseTo(44);
    expect(stealPercent(null, after)).toBeNull();
    expect(stealPercent(after, after)).toBeNull();
    expect(parseHostCpu('intr 1 2 3')).toBeNull();
  });
});

// bench/goals.ts judges issue 10's goals by what this reads back from a scorecard's output.
describe('scorecard figures', () => {
  it('reads each table under its title, without the rule, up to the notes under it', () => {
    const [table, ...rest] = printedTables(
      [
        '### sizes — v24',
        '',
        '| name | bytes |',
        '| ---- | ----: |',
        '| a    | 1,234.5 |',
        '| b    | –     |',
        '',
        'Notes under the table.',
        '| not | a table row |',
      ].join('\n'),
    );
    expect(rest).toEqual([]);
    expect(table).toEqual({
      title: 'sizes — v24',
      header: ['name', 'bytes'],
      rows: [
        ['a', '1,234.5'],
        ['b', '–'],
      ],
    });
    expect(printedNumber(cellOf(table!, 'a', 'bytes'))).toBe(1234.5);
    expect(printedNumber(cellOf(table!, 'b', 'bytes'))).toBeNaN();
    expect(cellOf(table!, 'a', 'no such column')).toBeUndefined();
  });

  it('reads every goal figure of a committed scorecard pass', () => {
    const pass = readPass('bench/passes/2026-12-06e-amd-epyc/scorecard');
    expect(pass.maxStealPercent).toBe(0);
    expect(pass.paced['24'].postgres).toEqual({
      ttftP50: 13.5,
      ttftP99: 62.5,
      scheduleP99: 38.6,
      completedOf500: 362,
      loneStreamCpu: 2.77,
    });
    expect(pass.paced['24'].pipe).toMatchObject({
      ttftP50: 3,
      ttftP99: 42.9,
      scheduleP99: 14,
      completedOf500: 466,
    });
    expect(pass.paced['24'].floor?.completedOf500).toBe(476);
    expect(pass.paced['20'].floor).toBeUndefined();
    expect(pass.cpu['24'].postgres).toEqual({ oneStream: 1.12, tenStreams: 1.14, pacedHundred: 1.45 });
    expect(pass.cpu['24'].floor.pacedHundred).toBe(0.98);
    expect(pass.cpu['20'].pglite).toEqual({ oneStream: 1.29, tenStreams: 1.37, pacedHundred: 1.34 });
    expect(pass.resume['24']).toEqual({
      same: 2.48,
      other: 2.88,
      bSame: 2.41,
      bOther: 2.36,
      pgliteSame: 3.56,
    });
    expect(pass.fanOut).toBe(1.03);
    expect(pass.storage).toEqual({ scripted: 1.88, prose: 2.62 });
    expect([...pass.scaleOut]).toEqual([
      [1, 5003],
      [2, 9972],
      [4, 19033],
    ]);
  });

  it('takes the most steal of any step from the log, and says nothing when the log does not record it', () => {
    const log =
      '== a end 06:59:00 rc 0, steal 0 % of the CPU time\n== b end 07:00:37 rc 0, steal 12.5 % of the CPU time\n';
    expect(maxStealPercent(log)).toBe(12.5);
    expect(maxStealPercent('== a end 06:59:00 rc 0\n')).toBeNaN();
    expect(maxStealPercent(null)).toBeNaN();
  });
});
