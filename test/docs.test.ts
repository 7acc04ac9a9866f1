/**
 * The API reference (typedoc.json, `npm run docs`): TypeDoc's validation of the public surface
 * (src/index.ts) passes with warnings as errors, so an undocumented export, a link to nothing or a
 * public signature naming an unexported type fails; and every exported class and function has an
 * `@example` in its TSDoc. One conversion, no output written. A small fixture first shows that
 * both checks see what they are for (an undocumented export, a function without an example).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Application, Logger, LogLevel, ReflectionKind, TSConfigReader, TypeDocReader, type ProjectReflection } from 'typedoc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Collects TypeDoc's warnings and errors instead of printing them. */
class Collecting extends Logger {
  readonly messages: string[] = [];
  override log(message: string, level: LogLevel): void {
    super.log(message, level);
    if (level >= LogLevel.Warn) this.messages.push(message);
  }
}

/** Converts and validates the project of `typedocJson`; returns the reflections and what TypeDoc reported. */
async function document(typedocJson: string): Promise<{ project: ProjectReflection | undefined; messages: string[] }> {
  const app = await Application.bootstrapWithPlugins({ options: typedocJson }, [new TypeDocReader(), new TSConfigReader()]);
  const logger = new Collecting();
  app.logger = logger;
  const project = await app.convert();
  if (project) app.validate(project);
  return { project, messages: logger.messages };
}

/**
 * Top-level classes and functions of the project without an `@example` block tag (classes in
 * their own comment; functions in every signature).
 */
function withoutExample(project: ProjectReflection): string[] {
  const has = (c: { blockTags: { tag: string }[] } | undefined) => c?.blockTags.some((t) => t.tag === '@example') === true;
  return (project.children ?? [])
    .filter((r) => r.kindOf(ReflectionKind.Class | ReflectionKind.Function))
    .filter((r) => (r.kindOf(ReflectionKind.Class) ? !has(r.comment) : !(r.signatures ?? []).every((s) => has(s.comment))))
    .map((r) => r.name);
}

// Exports exempt from the @example rule (none).
const NO_EXAMPLE_YET = new Set<string>();

describe('the checks themselves, on a fixture', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'attnkit-docs-'));
    writeFileSync(
      join(dir, 'index.ts'),
      [
        '/**',
        ' * Documented, with an example.',
        ' *',
        ' * @example',
        ' * ```ts',
        ' * documented();',
        ' * ```',
        ' */',
        'export function documented(): void {}',
        '/** Documented, no example. */',
        'export function noExample(): void {}',
        'export function undocumented(): void {}',
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', skipLibCheck: true, types: [] }, files: ['index.ts'] }));
    // the project's settings (validation, warnings as errors), on the fixture
    writeFileSync(
      join(dir, 'typedoc.json'),
      JSON.stringify({ extends: [join(root, 'typedoc.json')], entryPoints: ['index.ts'], tsconfig: 'tsconfig.json', intentionallyNotDocumented: [] }),
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('an undocumented export is reported, and a function without @example is found', async () => {
    const { project, messages } = await document(join(dir, 'typedoc.json'));
    expect(project).toBeDefined();
    expect(messages.filter((m) => /undocumented.*does not have any documentation/.test(m))).toHaveLength(1);
    expect(messages.some((m) => /\bnoExample\b|\bdocumented\b.*does not have/.test(m))).toBe(false);
    expect(withoutExample(project!).sort()).toEqual(['noExample', 'undocumented']);
  }, 120_000);
});

describe('the API reference of src/index.ts', () => {
  let result: Awaited<ReturnType<typeof document>>;
  beforeAll(async () => {
    result = await document(join(root, 'typedoc.json'));
  }, 180_000);

  it('TypeDoc validation passes with warnings as errors: every export documented, no dangling link', () => {
    expect(result.project).toBeDefined();
    expect(result.messages).toEqual([]);
  });

  it('every exported class and function has an @example', () => {
    const names = (result.project!.children ?? []).map((r) => r.name);
    for (const n of ['Tensor', 'Stream', 'AttnkitError', 'BlockMask', 'attention', 'na2d', 'blockSparseAttention', 'linearAttention', 'mergeAttention', 'mobaMask'])
      expect(names, n).toContain(n);
    for (const n of NO_EXAMPLE_YET) expect(names, `${n} (exempt, must exist)`).toContain(n);
    expect(withoutExample(result.project!).filter((n) => !NO_EXAMPLE_YET.has(n))).toEqual([]);
  });
});
