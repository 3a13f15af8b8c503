import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Every `from '…'`, `import '…'` and `import('…')` specifier of a source file. */
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g;

function sourceFiles(folder: string): string[] {
  return readdirSync(join(ROOT, folder), { recursive: true, encoding: 'utf8' })
    .filter((path) => /\.tsx?$/.test(path))
    .map((path) => join(folder, path));
}

/** The import statements of `file`, with each specifier resolved to a repository path when it is relative. */
function importsOf(file: string): Array<{ statement: string; target: string }> {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const imports: Array<{ statement: string; target: string }> = [];
  for (const match of text.matchAll(SPECIFIER)) {
    const specifier = match[1] as string;
    const lineStart = text.lastIndexOf('\n', match.index) + 1;
    const statementStart = text.lastIndexOf('import', match.index);
    const statement = text.slice(Math.min(lineStart, statementStart), match.index + match[0].length);
    const target = specifier.startsWith('.')
      ? relative(ROOT, resolve(ROOT, dirname(file), specifier))
      : specifier;
    imports.push({ statement, target });
  }
  return imports;
}

const isTest = (file: string) => /\.test\.tsx?$/.test(file);

describe('the protocol boundary', () => {
  it('keeps the client, the React hook and the web app off server modules', () => {
    const allowed = ['src/protocol/', 'src/client/', 'src/react/', 'web/'];
    const offending = ['src/client', 'src/react', 'web/src']
      .flatMap(sourceFiles)
      .filter((file) => !isTest(file))
      .flatMap((file) =>
        importsOf(file)
          .filter(({ target }) => target.startsWith('src/') || target.startsWith('test/'))
          .filter(({ target }) => !allowed.some((prefix) => target.startsWith(prefix)))
          .map(({ target }) => `${file} imports ${target}`),
      );
    expect(offending).toEqual([]);
  });

  it('keeps the protocol module free of server imports and of runtime imports of the AI SDK', () => {
    const offending = sourceFiles('src/protocol')
      .filter((file) => !isTest(file))
      .flatMap((file) =>
        importsOf(file)
          .filter(
            ({ statement, target }) =>
              (target.startsWith('src/') && !target.startsWith('src/protocol/')) ||
              (target === 'ai' && !/^import type\b/.test(statement.trimStart())) ||
              (!target.startsWith('src/') && target !== 'ai' && target !== 'eventsource-parser'),
          )
          .map(({ target }) => `${file} imports ${target}`),
      );
    expect(offending).toEqual([]);
  });
});
