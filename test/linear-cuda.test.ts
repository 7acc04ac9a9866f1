/**
 * The CUDA linear-attention forward, version 0 (native/cuda/linear/fwd.cuh: the chunk algebra in
 * float32 SIMT code, not yet in the dispatch table), under the SIMT emulator: the test program
 * native/cuda/linear/tests/linear_test.cc (its own float64 reference of the recurrence and its
 * tolerance rule) built with g++ against native/simt, run in every thread order (forward, reverse,
 * ahead) and once under AddressSanitizer. Skipped visibly where the emulator cannot run.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  buildKey,
  COMMON_FLAGS,
  FLAVOR_FLAGS,
  inputsDigest,
  ORDERS,
  prepareDir,
  root,
  runSteps,
  RUNTIME,
  SIMT,
  skipReason,
  type BuildStep,
  type Flavor,
} from './simt-toolchain.ts';

const PROGRAM = 'native/cuda/linear/tests/linear_test.cc';
const CASES = ['linear_fwd_f32', 'linear_fwd_f16', 'linear_fwd_bf16'];

/** Builds the emulator runtime and the program for a flavor into build/simt/linear/<flavor>/. */
async function build(flavor: Flavor): Promise<string> {
  const flags = [...COMMON_FLAGS, `-I${join(root, 'native', 'include')}`, ...FLAVOR_FLAGS[flavor]];
  const key = buildKey(inputsDigest(), flags);
  const dir = join(root, 'build', 'simt', 'linear', flavor);
  prepareDir(dir, key);
  const objects: BuildStep[] = RUNTIME.map((src) => ({ target: join(dir, `${src.replace(/\.\w+$/, '')}-${key}.o`), args: [...flags, '-c', join(SIMT, src), '-o'] }));
  const main = { target: join(dir, `linear_test-${key}.o`), args: [...flags, '-c', join(root, PROGRAM), '-o'] };
  const bin = join(dir, `linear_test-${key}`);
  await runSteps([[...objects, main], [{ target: bin, args: [...flags, main.target, ...objects.map((o) => o.target), '-ldl', '-o'] }]], 'the linear emulator test');
  return bin;
}

describe.skipIf(skipReason !== null)(`CUDA linear forward v0 under the SIMT emulator${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  it('the program lists one case per dtype', async () => {
    const bin = await build('opt');
    const r = spawnSync(bin, ['--list'], { encoding: 'utf8' });
    expect(r.stdout.trim().split('\n')).toEqual(CASES);
  }, 300_000);

  for (const order of ORDERS)
    it(`every case passes against float64, thread order ${order}`, async () => {
      const bin = await build('opt');
      const r = spawnSync(bin, [], { encoding: 'utf8', env: { ...process.env, SIMT_ORDER: order }, timeout: 120_000 });
      expect(r.stdout + r.stderr, 'program output').toContain(`${CASES.length} case(s), 0 failed`);
      for (const c of CASES) expect(r.stdout).toContain(`ok ${c}\n`);
      expect(r.status).toBe(0);
    }, 300_000);

  it('every case passes under AddressSanitizer', async () => {
    const bin = await build('asan');
    const r = spawnSync(bin, [], { encoding: 'utf8', timeout: 300_000 });
    expect(r.stdout + r.stderr, 'program output').toContain(`${CASES.length} case(s), 0 failed`);
    expect(r.status).toBe(0);
  }, 600_000);
});
