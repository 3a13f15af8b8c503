import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../errors.ts';
import { assertStorableText, MAX_JSON_DEPTH } from './text-guard.ts';

/** `depth` arrays, each holding the next; the innermost holds `inner`. */
const nested = (depth: number, inner: unknown = 1): unknown => {
  let value = inner;
  for (let level = 0; level < depth; level++) value = [value];
  return value;
};

describe('assertStorableText', () => {
  it('takes arrays and objects nested up to the limit and refuses one level more with invalid_json', () => {
    expect(() => assertStorableText({ a: nested(MAX_JSON_DEPTH - 1) }, 'body')).not.toThrow();
    const refused = (() => {
      try {
        assertStorableText({ a: nested(MAX_JSON_DEPTH) }, 'body');
      } catch (error) {
        return error;
      }
    })();
    expect(refused).toBeInstanceOf(InvalidRequestError);
    expect(refused).toMatchObject({ code: 'invalid_json', status: 400 });
  });

  it('refuses 100,000 levels without walking them (no stack overflow)', () => {
    expect(() => assertStorableText(JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)), 'body')).toThrow(
      InvalidRequestError,
    );
  });

  it('still names an unstorable string in a value within the limit', () => {
    expect(() => assertStorableText({ input: { parts: [{ text: 'a\u0000b' }] } }, 'body')).toThrow(
      'input.parts.0.text must not contain NUL',
    );
  });

  it('refuses a __proto__ key anywhere, naming where, and takes constructor and prototype as plain keys', () => {
    expect(() =>
      assertStorableText(JSON.parse('{"metadata":{"a":[{"__proto__":{"x":1}}]}}'), 'body'),
    ).toThrow('metadata.a.0.__proto__: `__proto__` is not allowed as a key.');
    expect(() =>
      assertStorableText(JSON.parse('{"metadata":{"constructor":{"prototype":{"x":1}}}}'), 'body'),
    ).not.toThrow();
  });
});
