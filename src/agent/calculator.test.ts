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
    ['1 +', 'Unexpected end of expression.'],
    ['(1 + 2', 'Expected ")" but found end of expression.'],
    ['1 + 2)', 'Unexpected ")" at position 6.'],
    ['2 3', 'Unexpected "3" at position 3.'],
    ['1 & 2', 'Unexpected character "&" at position 3.'],
    ['foo(1)', 'Unknown name "foo"'],
    ['sqrt(1, 2)', 'sqrt() takes 1 argument(s), got 2.'],
    ['max()', 'Unexpected ")"'],
    ['sqrt(-1)', 'Result is not a number.'],
    ['10 ^ 400', 'Result is too large.'],
    ['round(1, 99)', 'round(x, digits)'],
    ['toString(1)', 'Unknown name "tostring"'],
    ['process.exit(1)', 'Unexpected character "."'],
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

  it('rejects deep nesting instead of overflowing the stack', () => {
    expect(() => evaluateExpression('('.repeat(200) + '1' + ')'.repeat(200))).toThrow('nested deeper');
    expect(() => evaluateExpression('-'.repeat(400) + '1')).toThrow('nested deeper');
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
