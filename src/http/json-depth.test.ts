import { describe, expect, it } from 'vitest';
import { nestsDeeperThan } from './json-depth.ts';

describe('nestsDeeperThan', () => {
  const nested = (depth: number) => '{"a":'.repeat(depth) + '[1]' + '}'.repeat(depth);

  it('counts arrays and objects, up to the limit and past it', () => {
    expect(nestsDeeperThan(nested(2), 3)).toBe(false); // 2 objects and an array: 3 levels
    expect(nestsDeeperThan(nested(3), 3)).toBe(true);
    expect(nestsDeeperThan('[[[]]]', 3)).toBe(false);
    expect(nestsDeeperThan('[[[[]]]]', 3)).toBe(true);
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    expect(nestsDeeperThan(JSON.stringify({ text: '[[[[[[{{{{' }), 2)).toBe(false);
    expect(nestsDeeperThan(JSON.stringify({ text: 'a "quoted" [[[[ \\ back' }), 1)).toBe(false);
    expect(nestsDeeperThan('{"a":"\\\\"}', 1)).toBe(false);
    expect(nestsDeeperThan('{"a":"\\\\","b":[[1]]}', 2)).toBe(true);
  });

  it('reads siblings at the same depth as one level', () => {
    expect(nestsDeeperThan(JSON.stringify([[1], [2], [3], { a: [4] }]), 3)).toBe(false);
  });
});
