import { Parser, type Expression, type ParserOptions } from 'expr-eval-fork';

/** The longest expression the calculator accepts. */
export const MAX_EXPRESSION_LENGTH = 500;

/** A user-facing problem with an expression: bad syntax, an unknown function, division by zero… */
export class CalculatorError extends Error {
  override readonly name = 'CalculatorError';
}

type MathFunction = (...values: number[]) => number;

/** Builds a prototype-free table, so names such as `constructor` can never reach `Object.prototype`. */
function table<T>(entries: Record<string, T>): Record<string, T> {
  return Object.assign(Object.create(null) as Record<string, T>, entries);
}

function divide(left: number, right: number): number {
  if (right === 0) throw new CalculatorError('Division by zero.');
  return left / right;
}

function remainder(left: number, right: number): number {
  if (right === 0) throw new CalculatorError('Modulo by zero.');
  return left % right;
}

function round(value: number, digits = 0): number {
  if (!Number.isInteger(digits) || digits < 0 || digits > 15) {
    throw new CalculatorError('round(x, digits) needs digits to be an integer from 0 to 15.');
  }
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** One-argument operators; `sqrt 16` works as well as `sqrt(16)`. */
const UNARY_OPERATORS = table<MathFunction>({
  '-': (value) => -(value as number),
  '+': (value) => value as number,
  sqrt: Math.sqrt,
  abs: Math.abs,
  floor: Math.floor,
  ceil: Math.ceil,
});

const BINARY_OPERATORS = table<MathFunction>({
  '+': (left, right) => (left as number) + (right as number),
  '-': (left, right) => (left as number) - (right as number),
  '*': (left, right) => (left as number) * (right as number),
  '/': (left, right) => divide(left as number, right as number),
  '%': (left, right) => remainder(left as number, right as number),
  '^': (left, right) => (left as number) ** (right as number),
});

const FUNCTIONS = table<MathFunction>({
  min: (...values) => {
    if (values.length === 0) throw new CalculatorError('min() takes at least 1 argument(s), got 0.');
    return Math.min(...values);
  },
  max: (...values) => {
    if (values.length === 0) throw new CalculatorError('max() takes at least 1 argument(s), got 0.');
    return Math.max(...values);
  },
  round: (...values) => {
    if (values.length < 1 || values.length > 2) {
      throw new CalculatorError(`round() takes 1 or 2 argument(s), got ${values.length}.`);
    }
    return round(values[0] as number, values[1]);
  },
});

const CONSTANTS = table<number>({ pi: Math.PI, e: Math.E });

const KNOWN_NAMES = `Functions: ${[...Object.keys(UNARY_OPERATORS).slice(2), ...Object.keys(FUNCTIONS)].join(', ')}; constants: pi, e.`;

/**
 * expr-eval with arithmetic only: no comparisons, logic, strings, arrays, member access, assignments or
 * function definitions, and operator, function and constant tables of our own.
 */
function createParser(): Parser {
  const parser = new Parser({
    allowMemberAccess: false,
    operators: {
      comparison: false,
      concatenate: false,
      conditional: false,
      factorial: false,
      logical: false,
      in: false,
      assignment: false,
      fndef: false,
      random: false,
      length: false,
      // `array` is an option of the parser that its type declarations do not list.
      ...({ array: false } as ParserOptions['operators']),
    },
  });
  parser.unaryOps = UNARY_OPERATORS;
  (parser as Parser & { binaryOps: unknown }).binaryOps = BINARY_OPERATORS;
  (parser as Parser & { ternaryOps: unknown }).ternaryOps = table({});
  parser.functions = FUNCTIONS;
  parser.consts = CONSTANTS;
  return parser;
}

const parser = createParser();

/** expr-eval's message (`parse error [1:7]: Expected )`) in the calculator's words. */
function invalid(error: unknown): CalculatorError {
  if (error instanceof CalculatorError) return error;
  const message = (error as Error).message;
  if (/TEOF/.test(message)) return new CalculatorError('Invalid expression: unexpected end of expression.');
  const located = /^parse error \[\d+:(\d+)\]: (.*)$/.exec(message);
  const detail = located ? `${located[2]} at position ${located[1]}` : message;
  return new CalculatorError(`Invalid expression: ${detail.replace(/\.$/, '')}.`);
}

function parse(expression: string): Expression {
  // expr-eval would take `;` as a separator of several expressions; the calculator takes one.
  if (expression.includes(';')) throw new CalculatorError('Invalid expression: unexpected ";".');
  try {
    // Names are case-insensitive (`SQRT(4)`, `PI`); the grammar has no strings to keep the case of.
    return parser.parse(expression.toLowerCase());
  } catch (error) {
    throw invalid(error);
  }
}

/**
 * Evaluates an arithmetic expression: numbers, `+ - * / % ^`, parentheses, unary minus, the constants
 * `pi` and `e`, and `sqrt abs min max round floor ceil`, with expr-eval (never `eval`). `^` binds tighter
 * than unary minus (`-2^2` is -4) and is right-associative. Throws `CalculatorError`.
 */
export function evaluateExpression(expression: string): number {
  if (expression.length > MAX_EXPRESSION_LENGTH) {
    throw new CalculatorError(`Expression is longer than ${MAX_EXPRESSION_LENGTH} characters.`);
  }
  if (expression.trim() === '') throw new CalculatorError('Expression is empty.');
  const parsed = parse(expression);
  // Every name must be one of ours; expr-eval would otherwise look it up among the (absent) variables.
  for (const name of parsed.symbols()) {
    if (!(name in FUNCTIONS) && !(name in UNARY_OPERATORS) && !(name in CONSTANTS)) {
      throw new CalculatorError(`Unknown name "${name}". ${KNOWN_NAMES}`);
    }
  }
  let value: unknown;
  try {
    value = parsed.evaluate();
  } catch (error) {
    throw invalid(error);
  }
  if (typeof value !== 'number') throw new CalculatorError('Result is not a number.');
  if (!Number.isFinite(value)) {
    throw new CalculatorError(Number.isNaN(value) ? 'Result is not a number.' : 'Result is too large.');
  }
  return Object.is(value, -0) ? 0 : value;
}

/** What the `calculator` tool returns: the value, or an error message the model can read. */
export type CalculatorResult = { expression: string; result: number } | { error: string };

/** Like `evaluateExpression`, but returns `{ error }` instead of throwing for a bad expression. */
export function calculate(expression: string): CalculatorResult {
  try {
    return { expression, result: evaluateExpression(expression) };
  } catch (error) {
    if (error instanceof CalculatorError) return { error: error.message };
    throw error;
  }
}
