/** The longest expression the calculator accepts. */
export const MAX_EXPRESSION_LENGTH = 500;

/** The deepest nesting of parentheses, unary signs and powers; it bounds the parser's recursion. */
const MAX_DEPTH = 64;

/** A user-facing problem with an expression: bad syntax, an unknown function, division by zero… */
export class CalculatorError extends Error {
  override readonly name = 'CalculatorError';
}

type Token =
  | { kind: 'number'; value: number; position: number }
  | { kind: 'name'; value: string; position: number }
  | { kind: 'operator'; value: '+' | '-' | '*' | '/' | '%' | '^' | '(' | ')' | ','; position: number }
  | { kind: 'end'; position: number };

const NUMBER = /\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?/y;
const NAME = /[A-Za-z_][A-Za-z0-9_]*/y;
const OPERATORS = '+-*/%^(),';

function tokenize(expression: string): Token[] {
  const tokens: Token[] = [];
  let position = 0;
  while (position < expression.length) {
    const character = expression[position] as string;
    if (/\s/.test(character)) {
      position++;
      continue;
    }
    NUMBER.lastIndex = position;
    const number = NUMBER.exec(expression);
    if (number) {
      tokens.push({ kind: 'number', value: Number(number[0]), position });
      position += number[0].length;
      continue;
    }
    NAME.lastIndex = position;
    const name = NAME.exec(expression);
    if (name) {
      tokens.push({ kind: 'name', value: name[0].toLowerCase(), position });
      position += name[0].length;
      continue;
    }
    if (OPERATORS.includes(character)) {
      tokens.push({ kind: 'operator', value: character as '+', position });
      position++;
      continue;
    }
    throw new CalculatorError(`Unexpected character "${character}" at position ${position + 1}.`);
  }
  tokens.push({ kind: 'end', position });
  return tokens;
}

const CONSTANTS = new Map<string, number>([
  ['pi', Math.PI],
  ['e', Math.E],
]);

type MathFunction = { arity: [number, number]; apply: (...values: number[]) => number };

/** A `Map`, so names such as `constructor` cannot reach `Object.prototype`. */
const FUNCTIONS = new Map<string, MathFunction>(
  Object.entries({
    sqrt: { arity: [1, 1], apply: (value) => Math.sqrt(value as number) },
    abs: { arity: [1, 1], apply: (value) => Math.abs(value as number) },
    floor: { arity: [1, 1], apply: (value) => Math.floor(value as number) },
    ceil: { arity: [1, 1], apply: (value) => Math.ceil(value as number) },
    round: {
      arity: [1, 2],
      apply: (value, digits = 0) => {
        if (!Number.isInteger(digits) || digits < 0 || digits > 15) {
          throw new CalculatorError('round(x, digits) needs digits to be an integer from 0 to 15.');
        }
        const scale = 10 ** digits;
        return Math.round((value as number) * scale) / scale;
      },
    },
    min: { arity: [1, Infinity], apply: (...values) => Math.min(...values) },
    max: { arity: [1, Infinity], apply: (...values) => Math.max(...values) },
  } satisfies Record<string, MathFunction>),
);

function describe(token: Token): string {
  return token.kind === 'end' ? 'end of expression' : `"${token.value}" at position ${token.position + 1}`;
}

/**
 * A recursive-descent parser that evaluates as it parses. Grammar, loosest binding first:
 *
 *   expression := term (('+' | '-') term)*
 *   term       := unary (('*' | '/' | '%') unary)*
 *   unary      := ('-' | '+') unary | power
 *   power      := primary ('^' unary)?          right-associative; -2^2 is -(2^2)
 *   primary    := number | constant | name '(' expression (',' expression)* ')' | '(' expression ')'
 */
class Parser {
  private index = 0;
  private depth = 0;

  constructor(private readonly tokens: Token[]) {}

  parse(): number {
    const value = this.expression();
    const next = this.peek();
    if (next.kind !== 'end') throw new CalculatorError(`Unexpected ${describe(next)}.`);
    return value;
  }

  private peek(): Token {
    return this.tokens[this.index] as Token;
  }

  private next(): Token {
    return this.tokens[this.index++] as Token;
  }

  private isOperator(value: string): boolean {
    const token = this.peek();
    return token.kind === 'operator' && token.value === value;
  }

  /** Consumes the next token when it is one of `operators`, and returns it. */
  private accept<T extends string>(...operators: T[]): T | undefined {
    const token = this.peek();
    if (token.kind !== 'operator' || !(operators as string[]).includes(token.value)) return undefined;
    this.index++;
    return token.value as T;
  }

  private expect(value: string): void {
    const token = this.next();
    if (token.kind !== 'operator' || token.value !== value) {
      throw new CalculatorError(`Expected "${value}" but found ${describe(token)}.`);
    }
  }

  private nested<T>(parse: () => T): T {
    if (++this.depth > MAX_DEPTH)
      throw new CalculatorError(`Expression is nested deeper than ${MAX_DEPTH} levels.`);
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  private expression(): number {
    let value = this.term();
    for (let operator = this.accept('+', '-'); operator; operator = this.accept('+', '-')) {
      const right = this.term();
      value = operator === '+' ? value + right : value - right;
    }
    return value;
  }

  private term(): number {
    let value = this.unary();
    for (let operator = this.accept('*', '/', '%'); operator; operator = this.accept('*', '/', '%')) {
      const right = this.unary();
      if (operator === '*') {
        value *= right;
      } else if (right === 0) {
        throw new CalculatorError(operator === '/' ? 'Division by zero.' : 'Modulo by zero.');
      } else {
        value = operator === '/' ? value / right : value % right;
      }
    }
    return value;
  }

  private unary(): number {
    const sign = this.accept('-', '+');
    if (sign) return this.nested(() => (sign === '-' ? -this.unary() : this.unary()));
    return this.power();
  }

  private power(): number {
    const base = this.primary();
    if (!this.accept('^')) return base;
    const exponent = this.nested(() => this.unary());
    return base ** exponent;
  }

  private primary(): number {
    const token = this.next();
    if (token.kind === 'number') return token.value;
    if (token.kind === 'operator' && token.value === '(') {
      const value = this.nested(() => this.expression());
      this.expect(')');
      return value;
    }
    if (token.kind === 'name') {
      const fn = FUNCTIONS.get(token.value);
      if (fn === undefined) {
        const constant = CONSTANTS.get(token.value);
        if (constant !== undefined && !this.isOperator('(')) return constant;
        throw new CalculatorError(
          `Unknown name "${token.value}". Functions: ${[...FUNCTIONS.keys()].join(', ')}; constants: pi, e.`,
        );
      }
      this.expect('(');
      const args = [this.nested(() => this.expression())];
      while (this.accept(',')) {
        args.push(this.nested(() => this.expression()));
      }
      this.expect(')');
      const [min, max] = fn.arity;
      if (args.length < min || args.length > max) {
        const expected = max === Infinity ? `at least ${min}` : min === max ? `${min}` : `${min} or ${max}`;
        throw new CalculatorError(`${token.value}() takes ${expected} argument(s), got ${args.length}.`);
      }
      return fn.apply(...args);
    }
    throw new CalculatorError(`Unexpected ${describe(token)}.`);
  }
}

/**
 * Evaluates an arithmetic expression: numbers, `+ - * / % ^`, parentheses, unary minus, the constants
 * `pi` and `e`, and `sqrt abs min max round floor ceil`. Never uses `eval`. Throws `CalculatorError`.
 */
export function evaluateExpression(expression: string): number {
  if (expression.length > MAX_EXPRESSION_LENGTH) {
    throw new CalculatorError(`Expression is longer than ${MAX_EXPRESSION_LENGTH} characters.`);
  }
  if (expression.trim() === '') throw new CalculatorError('Expression is empty.');
  const value = new Parser(tokenize(expression)).parse();
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
