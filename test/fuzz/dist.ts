/**
 * The compiled package (dist/) that child processes load: the fuzz families and the CLI run as
 * users run them, in a process of their own. Compiled first when dist is missing or older than
 * the sources (as test/cli.test.ts does).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const distIndex = join(root, 'dist', 'src', 'index.js');
export const distCli = join(root, 'dist', 'src', 'cli', 'index.js');

function newestTs(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestTs(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** Compiles src/ to dist/ when dist is stale. */
export function ensureDist(): void {
  const sources = newestTs(join(root, 'src'));
  if (existsSync(distIndex) && existsSync(distCli) && statSync(distIndex).mtimeMs >= sources && statSync(distCli).mtimeMs >= sources) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8' });
  if (!existsSync(distIndex) || !existsSync(distCli)) throw new Error(`tsc did not produce dist/:\n${r.stdout}${r.stderr}`);
}
