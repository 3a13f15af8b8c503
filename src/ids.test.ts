import { describe, expect, it } from 'vitest';
import { isId, newId } from './ids.ts';

describe('newId', () => {
  it('hands out well-formed, distinct ids that sort by creation, across refills of its random pool', () => {
    // 2,000 ids draw on the 4 KiB pool four times over.
    const ids = Array.from({ length: 2000 }, () => newId('run'));
    expect(ids.every((id) => isId('run', id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    // The random part differs from id to id, also where a refill happened.
    const randomParts = new Set(ids.map((id) => id.slice(-16)));
    expect(randomParts.size).toBe(ids.length);
  });
});
