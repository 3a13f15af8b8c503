import { describe, expect, it } from 'vitest';
import { calculate, CalculatorError, evaluateExpression, MAX_EXPRESSION_LENGTH } from './calculator.ts';

describe('evaluateExpression', () => {
  it.each([
    ['1 + 2 * 3', 7],
    ['(1 + 2) * 3', 9],
    ['10 - 4 - 3', 3],
    ['100 / 10 / 5', 2],
    ['7 % 4 * 2', 6],
    ['2 ^ 3 ^ 2', 512],
    ['(2 ^ 3) ^ 2', 64],
    ['-2 ^ 2', -4],
    ['2 ^ -1', 0.5],
    ['--3', 3],
    ['-(1 + 2) * -2', 6],
    ['+4', 4],
    ['2 * 3 ^ 2', 18],
    ['1.5e3 + .5', 1500.5],
    ['sqrt(16) + abs(-3)', 7],
    ['min(3, 1, 2) + max(4, 9)', 10],
    ['round(2.5) + floor(1.9) + ceil(1.1)', 6],
    ['round(3.14159, 2)', 3.14],
    ['round(-0.4)', 0],
    ['SQRT(4)', 2],
    ['2 * pi', 2 * Math.PI],
    [' 1 +\t2 ', 3],
  ])('evaluates %s to %d', (expression, expected) => {
    expect(evaluateExpression(expression)).toBeCloseTo(expected, 10);
  });

  it.each([
    ['1 / 0', 'Division by zero.'],
    ['5 % (2 - 2)', 'Modulo by zero.'],
    ['', 'Expression is empty.'],
    ['1 +', 'Invalid expression: unexpected end of expression.'],
    ['(1 + 2', 'Invalid expression: Expected ) at position 7.'],
    ['1 + 2)', 'Invalid expression: Expected EOF at position 7.'],
    ['2 3', 'Invalid expression: Expected EOF at position 4.'],
    ['1 & 2', 'Invalid expression: Unknown character "&" at position 3.'],
    ['foo(1)', 'Unknown name "foo"'],
    ['sqrt(1, 2)', 'Invalid expression'],
    ['max()', 'max() takes at least 1 argument(s), got 0.'],
    ['round(1, 2, 3)', 'round() takes 1 or 2 argument(s), got 3.'],
    ['sqrt(-1)', 'Result is not a number.'],
    ['10 ^ 400', 'Result is too large.'],
    ['round(1, 99)', 'round(x, digits)'],
    ['toString(1)', 'Unknown name "tostring"'],
    ['process.exit(1)', 'member access is not permitted'],
    ["'text'", 'Result is not a number.'],
    ['[1, 2]', 'Invalid expression'],
    ['1; 2', 'unexpected ";"'],
    ['x = 2', 'Invalid expression'],
    ['f(x) = x', 'Invalid expression'],
    ['1 == 1', 'Invalid expression'],
    ['1 ? 2 : 3', 'Invalid expression'],
    ['3!', 'Invalid expression'],
    ['pi(2)', 'Invalid expression'],
  ])('rejects %s', (expression, message) => {
    expect(() => evaluateExpression(expression)).toThrow(CalculatorError);
    expect(() => evaluateExpression(expression)).toThrow(message);
  });

  it('treats Object.prototype names such as constructor as unknown names', () => {
    expect(() => evaluateExpression('constructor')).toThrow('Unknown name "constructor"');
    expect(() => evaluateExpression('constructor(1)')).toThrow('Unknown name "constructor"');
    expect(() => evaluateExpression('__proto__')).toThrow('Unknown name "__proto__"');
  });

  it(`rejects expressions longer than ${MAX_EXPRESSION_LENGTH} characters`, () => {
    const longest = '1+'.repeat(249) + '10';
    expect(longest).toHaveLength(MAX_EXPRESSION_LENGTH);
    expect(evaluateExpression(longest)).toBe(259);
    expect(() => evaluateExpression(longest + '0')).toThrow(`longer than ${MAX_EXPRESSION_LENGTH}`);
  });

  it('evaluates the deepest nesting the length limit allows without overflowing the stack', () => {
    expect(evaluateExpression('('.repeat(249) + '1' + ')'.repeat(249))).toBe(1);
    expect(evaluateExpression('-'.repeat(499) + '1')).toBe(-1);
  });

  it('never reaches JavaScript globals or Object.prototype through names', () => {
    for (const name of ['process', 'globalThis', 'Function', 'eval', 'this', 'prototype']) {
      expect(() => evaluateExpression(`${name}(1)`)).toThrow(CalculatorError);
    }
  });
});

describe('calculate', () => {
  it('returns the result with the expression', () => {
    expect(calculate('6 * 7')).toEqual({ expression: '6 * 7', result: 42 });
  });

  it('returns errors as { error } instead of throwing', () => {
    expect(calculate('1 / 0')).toEqual({ error: 'Division by zero.' });
  });
});
