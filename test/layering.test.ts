/**
 * Layering of the TypeScript sources (CONTRIBUTING.md, "the rules that keep them apart"), checked
 * from the source text: no import cycle in src/; src/ imports nothing outside src/ (the shipped CLI
 * and its benchmarks included); the CLI reaches the addon only through the public API and
 * src/bench/; the float64 references are ground truth for tests and benchmarks, not a dependency of
 * the production code; and the binding's TypeScript types are declared once, in src/native.ts, for
 * exactly what the addon exports.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Every .ts file under `dir` (repository-relative, forward slashes). */
function tsFiles(dir: string): string[] {
  if (!existsSync(join(root, dir))) return [];
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(`${dir}/${e.name}`) : e.name.endsWith('.ts') ? [`${dir}/${e.name}`] : [],
  );
}

/** Source text without comments (so that prose naming a module is not an import). */
const code = (f: string) =>
  readFileSync(join(root, f), 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`])\/\/.*$/gm, '$1');

/**
 * The relative modules a file imports, as repository paths of .ts files: static imports and
 * re-exports (type-only ones too: a type cycle is a design cycle) and dynamic import().
 */
export function importsOf(f: string, text = code(f), { dynamic = true, types = true } = {}): string[] {
  const specs = [
    ...[...text.matchAll(/\b(?:import|export)\s+(type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]/g)]
      .filter((m) => types || m[1] === undefined)
      .map((m) => m[2]!),
    ...(dynamic ? [...text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]!) : []),
  ];
  return specs
    .filter((s) => s.startsWith('.'))
    .map((s) => relative(root, join(root, dirname(f), s)).split('\\').join('/').replace(/\.js$/, '.ts'));
}

/** Every cycle of the import graph, one per strongly connected component (Tarjan). */
export function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

const src = tsFiles('src');
const graph = new Map(src.map((f) => [f, importsOf(f)]));

describe('TypeScript layering', () => {
  it('the cycle finder finds a two-module cycle, a self-import and a long cycle, and nothing in a chain', () => {
    expect(importsOf('src/x/a.ts', "import { b } from './b.js';\nimport type { C } from '../c.js';\nexport * from './d.js';\nconst e = await import('../e/e.js');"))
      .toEqual(['src/x/b.ts', 'src/c.ts', 'src/x/d.ts', 'src/e/e.ts']);
    expect(importsOf('src/x/a.ts', "import { b } from './b.js';\nimport type { C } from '../c.js';\nconst e = await import('../e/e.js');", { dynamic: false, types: false }))
      .toEqual(['src/x/b.ts']);
    const g = (edges: [string, string[]][]) => new Map(edges);
    expect(cycles(g([['a', ['b']], ['b', ['a']], ['c', ['a']]]))).toEqual([['a', 'b']]);
    expect(cycles(g([['a', ['a']]]))).toEqual([['a']]);
    expect(cycles(g([['a', ['b']], ['b', ['c']], ['c', ['d']], ['d', ['a']]]))).toEqual([['a', 'b', 'c', 'd']]);
    expect(cycles(g([['a', ['b']], ['b', ['c']], ['c', []]]))).toEqual([]);
  });

  it('src/ has no import cycle', () => {
    expect(src.length).toBeGreaterThan(30);
    expect(graph.get('src/masks/block-mask.ts')).toContain('src/masks/builders.ts');
    expect(cycles(graph)).toEqual([]);
  });

  it('src/ imports nothing outside src/, and every relative import exists', () => {
    const bad = [...graph].flatMap(([f, deps]) => deps.filter((d) => !d.startsWith('src/') || !existsSync(join(root, d))).map((d) => `${f} -> ${d}`));
    expect(bad).toEqual([]);
  });

  it('the benchmarks are part of the package: no bench/ folder, nothing ships from dist/bench', () => {
    expect(tsFiles('bench')).toEqual([]);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[]; scripts: Record<string, string> };
    expect(pkg.files.filter((f) => /(^|\/)bench\//.test(f) && !f.startsWith('dist/src/'))).toEqual([]);
    expect(pkg.scripts.bench).toBe('node dist/src/cli/index.js bench');
  });

  it('the CLI reaches the addon only through the public API and src/bench/', () => {
    const cli = src.filter((f) => f.startsWith('src/cli/'));
    expect(cli).toContain('src/cli/index.ts');
    const bad = cli.flatMap((f) => graph.get(f)!.filter((d) => d === 'src/native.ts' || d.startsWith('src/ops/') || d.startsWith('src/masks/')).map((d) => `${f} -> ${d}`));
    expect(bad).toEqual([]);
  });

  it('no static import of the CLI reaches the addon (--threads must apply before the thread pool starts)', () => {
    const loads = (f: string) => importsOf(f, code(f), { dynamic: false, types: false });
    const seen = new Set<string>();
    const todo = ['src/cli/index.ts'];
    while (todo.length > 0) {
      const f = todo.pop()!;
      if (seen.has(f) || !existsSync(join(root, f))) continue;
      seen.add(f);
      todo.push(...loads(f));
    }
    expect(seen).toContain('src/cli/bench.ts');
    expect([...seen].filter((f) => f === 'src/native.ts' || f === 'src/index.ts')).toEqual([]);
  });

  it('only src/index.ts (the `reference` namespace) and src/reference/ import the float64 references', () => {
    const bad = [...graph].flatMap(([f, deps]) =>
      f === 'src/index.ts' || f.startsWith('src/reference/') ? [] : deps.filter((d) => d.startsWith('src/reference/')).map((d) => `${f} -> ${d}`),
    );
    expect(bad).toEqual([]);
  });
});

describe('the binding is declared once (src/native.ts)', () => {
  const text = readFileSync(join(root, 'src/native.ts'), 'utf8');
  const body = /export interface NativeBinding \{([\s\S]*?)\n\}/.exec(text)?.[1] ?? '';
  const declared = [...body.matchAll(/^ {2}(\w+)\s*[(:]/gm)].map((m) => m[1]!);

  it('NativeBinding declares exactly what the addon exports', () => {
    expect(declared.length).toBeGreaterThan(20);
    expect([...declared].sort()).toEqual(Object.keys(native).sort());
  });

  it('no other file declares a binding shape or casts the addon to one', () => {
    // (this file names the interface in its own patterns)
    const files = [...src, ...tsFiles('test')].filter((f) => f !== 'src/native.ts' && f !== 'test/layering.test.ts');
    const shape = /\binterface\s+\w*Binding\b|\bnative\s+as\s+(unknown\b|NativeBinding\b|\{)|\bas\s+(unknown\s+as\s+)?NativeBinding\b/;
    const bad = files.filter((f) => shape.test(code(f)));
    expect(bad).toEqual([]);
  });
});
