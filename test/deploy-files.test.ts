import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, OTHER_VARIABLES } from '../src/config.ts';

const read = (file: string) => readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

/** The Node flags every shipped start command passes (docs/deploy.md, "Node's young generation"). */
const NODE_FLAGS = '--min-semi-space-size=16';

describe('package.json', () => {
  it('starts the server with the shipped Node flags', () => {
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.start).toBe(`node ${NODE_FLAGS} bin/outrun.js serve`);
  });
});

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string> | string[];
  healthcheck?: { disable?: boolean };
}

const compose = parse(read('compose.yaml'), { merge: true }) as { services: Record<string, ComposeService> };
const outrunServices = Object.entries(compose.services).filter(([, service]) => service.build !== undefined);

/** The variable names a service sets, from either compose form (map or `NAME=value` list). */
function variables(service: ComposeService): string[] {
  if (!service.environment) return [];
  if (Array.isArray(service.environment)) return service.environment.map((entry) => entry.split('=')[0]!);
  return Object.keys(service.environment);
}

describe('compose.yaml', () => {
  it('sets only variables Outrun knows (configuration or provider keys)', () => {
    const known = new Set<string>([...Object.values(CONFIG_VARIABLES), ...OTHER_VARIABLES]);
    expect(outrunServices.length).toBeGreaterThan(0);
    for (const [name, service] of outrunServices) {
      const unknown = variables(service).filter((variable) => !known.has(variable));
      expect(unknown, `${name} sets unknown variables`).toEqual([]);
    }
  });

  it('runs PostgreSQL, Redis, two serve instances and two workers on one database and Redis', () => {
    const commands = outrunServices.map(([, service]) => service.command?.join(' '));
    expect(commands.filter((command) => command === `node ${NODE_FLAGS} bin/outrun.js serve`)).toHaveLength(
      2,
    );
    expect(commands.filter((command) => command === `node ${NODE_FLAGS} bin/outrun.js worker`)).toHaveLength(
      2,
    );
    expect(compose.services.postgres?.image).toMatch(/^postgres:/);
    expect(compose.services.redis?.image).toMatch(/^redis:/);
    const urls = new Set(
      outrunServices.map(([, service]) => {
        const environment = service.environment as Record<string, string>;
        return `${environment.DATABASE_URL} ${environment.REDIS_URL}`;
      }),
    );
    expect(urls.size).toBe(1);
  });

  it('gives workers no HTTP health check', () => {
    for (const [name, service] of outrunServices) {
      if (service.command?.includes('worker')) expect(service.healthcheck?.disable, name).toBe(true);
    }
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');

  it('builds in one stage and runs the packed package in another', () => {
    expect(dockerfile.match(/^FROM /gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/^FROM .* AS build$/m);
    expect(dockerfile).toMatch(/^COPY --from=build /m);
  });

  it('runs `outrun serve` as a non-root user with a /readyz health check', () => {
    expect(dockerfile).toMatch(/^CMD \["node", "--min-semi-space-size=16", "bin\/outrun\.js", "serve"\]$/m);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK [\s\S]*\/readyz/m);
  });

  it('sets only variables Outrun knows', () => {
    const known = new Set<string>([...Object.values(CONFIG_VARIABLES), ...OTHER_VARIABLES, 'NODE_ENV']);
    const block = /^ENV ((?:.*\\\n)*.*)$/m.exec(dockerfile)?.[1] ?? '';
    const names = [...block.matchAll(/([A-Z_]+)=/g)].map((match) => match[1]!);
    expect(names.length).toBeGreaterThan(0);
    expect(names.filter((name) => !known.has(name))).toEqual([]);
  });
});

describe('docs/deploy.md', () => {
  it('documents every variable Outrun reads', () => {
    const guide = read('docs/deploy.md');
    const missing = [...Object.values(CONFIG_VARIABLES), ...OTHER_VARIABLES]
      .filter((variable) => variable !== 'OUTRUN_FAULTS')
      .filter((variable) => !guide.includes(`\`${variable}\``));
    expect(missing).toEqual([]);
  });
});
