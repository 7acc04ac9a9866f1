/**
 * BlockMask unit tests: every builder against a brute-force element predicate (through toDense),
 * the canonical form of the lists (sorted, full blocks really full, partial bitmaps neither empty
 * nor full and without bits outside the tokens), non-square blocks and tails, and/or with
 * broadcasting, fromData validation, block-size and argument errors, and the build time of the
 * structured builders at N = 65536.
 */
import { describe, expect, it } from 'vitest';
import { AttnkitError, BlockMask, type BlockMaskData } from '../src/index.ts';
import { fromRowIntervals, fromRowSets } from '../src/masks/builders.ts';
import type { BuiltMask } from '../src/masks/mask-builder.ts';
import { attentionAllows } from '../src/reference/attention.ts';
import { neighborhoodMatrix } from '../src/reference/neighborhood.ts';
import { maskToSvg } from '../src/cli/mask-svg.ts';
import { rng } from './helpers.ts';

type Pred = (b: number, h: number, q: number, k: number) => boolean;

/** A builder's lists as a BlockMask (fromData validates them too). */
const wrap = (m: BuiltMask) => BlockMask.fromData(m.geometry, m.data);

/** Dense [B, H, Nq, Nk] visibility from a predicate. */
function brute(B: number, H: number, Nq: number, Nk: number, f: Pred): Uint8Array {
  const out = new Uint8Array(B * H * Nq * Nk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let q = 0; q < Nq; q++) for (let k = 0; k < Nk; k++) out[((b * H + h) * Nq + q) * Nk + k] = f(b, h, q, k) ? 1 : 0;
  return out;
}

/** First differing element of two dense masks, for failure messages. */
function firstDiff(m: BlockMask, got: Uint8Array, want: Uint8Array): string {
  if (got.length !== want.length) return `length ${got.length} != ${want.length}`;
  for (let i = 0; i < got.length; i++)
    if (got[i] !== want[i]) {
      const k = i % m.Nk;
      const q = Math.floor(i / m.Nk) % m.Nq;
      const bh = Math.floor(i / (m.Nk * m.Nq));
      return `(bh ${bh}, q ${q}, k ${k}): got ${got[i]}, want ${want[i]}`;
    }
  return 'none';
}

async function expectDense(m: BlockMask, f: Pred): Promise<void> {
  const want = brute(m.B, m.H, m.Nq, m.Nk, f);
  const got = await m.toDense();
  const diff = firstDiff(m, got, want);
  expect(diff, diff).toBe('none');
  checkCanonical(m);
}

/**
 * The lists are the kernels' contract: per row increasing indices in range, a block is listed at
 * most once (full or partial), full blocks are meant to be full (checked by toDense), partial
 * bitmaps are neither empty nor complete and hold no bit outside the in-range tokens.
 */
function checkCanonical(m: BlockMask): void {
  const d = m._host('test');
  const rows = m.B * m.H * m.qBlocks;
  expect(d.fullOffsets.length).toBe(rows + 1);
  expect(d.partialOffsets.length).toBe(rows + 1);
  const W = m.wordsPerRow;
  expect(d.partialBits.length).toBe(d.partialIndices.length * m.blockQ * W);
  for (let r = 0; r < rows; r++) {
    const qb = r % m.qBlocks;
    const seen = new Set<number>();
    for (const [off, idx] of [
      [d.fullOffsets, d.fullIndices],
      [d.partialOffsets, d.partialIndices],
    ] as const) {
      if (off[r + 1]! < off[r]!) throw new Error(`row ${r}: offsets decrease`);
      for (let i = off[r]!; i < off[r + 1]!; i++) {
        const kb = idx[i]!;
        if (!(kb >= 0 && kb < m.kBlocks)) throw new Error(`row ${r}: key block ${kb} out of range`);
        if (i > off[r]! && kb <= idx[i - 1]!) throw new Error(`row ${r}: indices not increasing`);
        if (seen.has(kb)) throw new Error(`row ${r}: key block ${kb} listed twice`);
        seen.add(kb);
      }
    }
    const qRows = Math.min(m.blockQ, m.Nq - qb * m.blockQ);
    const bad: string[] = [];
    for (let i = d.partialOffsets[r]!; i < d.partialOffsets[r + 1]!; i++) {
      const cols = Math.min(m.blockK, m.Nk - d.partialIndices[i]! * m.blockK);
      let set = 0;
      for (let rr = 0; rr < m.blockQ; rr++)
        for (let j = 0; j < m.blockK; j++) {
          const bit = (d.partialBits[(i * m.blockQ + rr) * W + (j >> 5)]! >>> (j & 31)) & 1;
          if (rr >= qRows || j >= cols) {
            if (bit) bad.push(`row ${r} partial ${d.partialIndices[i]}: bit (${rr}, ${j}) outside the tokens`);
          } else set += bit;
        }
      if (set === 0) bad.push(`row ${r} partial block ${d.partialIndices[i]} is empty`);
      if (set === qRows * cols) bad.push(`row ${r} partial block ${d.partialIndices[i]} is complete (should be full)`);
    }
    expect(bad.slice(0, 3)).toEqual([]);
  }
}

const BLOCKS: [number, number][] = [
  [64, 64],
  [16, 128],
  [128, 16],
  [32, 64],
  [16, 16],
  [128, 128],
];

/** Sequence-length pairs: equal, Nq < Nk, Nq > Nk, tails everywhere, one token. */
const LENGTHS: [number, number][] = [
  [200, 200],
  [77, 300],
  [300, 77],
  [1, 129],
  [129, 1],
  [256, 256],
];

const expectError = (fn: () => unknown, code: string, message: string) => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a throw').toBeInstanceOf(AttnkitError);
  expect((err as AttnkitError).code).toBe(code);
  expect((err as AttnkitError).message).toBe(message);
};

describe('structured builders vs brute force', () => {
  for (const [bq, bk] of BLOCKS)
    for (const [Nq, Nk] of LENGTHS) {
      const opts = { blockQ: bq, blockK: bk };
      it(`causal Nq=${Nq} Nk=${Nk} blocks ${bq}x${bk}`, async () => {
        const m = BlockMask.causal(Nq, Nk, opts);
        expect(m.geometry).toEqual({ B: 1, H: 1, Nq, Nk, blockQ: bq, blockK: bk });
        expect(m.qBlocks).toBe(Math.ceil(Nq / bq));
        expect(m.kBlocks).toBe(Math.ceil(Nk / bk));
        await expectDense(m, (_b, _h, q, k) => k <= q + Nk - Nq);
      });
      for (const [left, right, causal] of [
        [20, 5, false],
        [0, 0, false],
        [-1, 3, false],
        [7, -1, false],
        [33, 0, true],
        [33, 9, true],
        [-1, -1, true],
      ] as const)
        it(`slidingWindow(${left}, ${right}${causal ? ', causal' : ''}) Nq=${Nq} Nk=${Nk} blocks ${bq}x${bk}`, async () => {
          const m = BlockMask.slidingWindow(Nq, Nk, left, right, { ...opts, causal });
          await expectDense(m, (_b, _h, q, k) => attentionAllows(q, k, Nq, Nk, { causal, window: [left, right] }));
        });
    }

  const DOCS: number[][] = [
    [1, 0, 37, 0, 0, 64, 1, 90, 1],
    [0, 200],
    [1, 1, 1, 1, 1],
    [130, 0],
    [0, 0],
    [],
  ];
  for (const [bq, bk] of BLOCKS)
    for (const lens of DOCS)
      for (const causal of [false, true])
        it(`documents [${lens}]${causal ? ' causal' : ''} blocks ${bq}x${bk}`, async () => {
          const N = lens.reduce((a, b) => a + b, 0);
          const doc = new Int32Array(N);
          let pos = 0;
          lens.forEach((l, d) => {
            doc.fill(d, pos, pos + l);
            pos += l;
          });
          const m = BlockMask.documents(lens, { blockQ: bq, blockK: bk, causal });
          expect(m.Nq).toBe(N);
          expect(m.Nk).toBe(N);
          await expectDense(m, (_b, _h, q, k) => doc[q] === doc[k] && (!causal || k <= q));
        });

  it('fromRowIntervals: monotone intervals, empty rows, Nq != Nk, blocks 32x16', async () => {
    const g = { B: 1, H: 1, Nq: 150, Nk: 97, blockQ: 32, blockK: 16 };
    const lo = (q: number) => Math.floor(q / 2) - 10;
    const hi = (q: number) => Math.floor((q * 2) / 3) - 5; // empty for small q
    const m = wrap(fromRowIntervals('test', g, lo, hi));
    await expectDense(m, (_b, _h, q, k) => k >= lo(q) && k <= hi(q));
  });

  it('fromRowSets: arbitrary sorted key sets, blocks 16x64, with progress', async () => {
    const r = rng(5);
    const Nq = 90;
    const Nk = 140;
    const sets = Array.from({ length: Nq }, () => {
      const s: number[] = [];
      for (let k = 0; k < Nk; k++) if (r() < (k < 64 ? 0.9 : 0.1)) s.push(k);
      return s;
    });
    sets[3] = []; // an empty row
    sets[4] = Array.from({ length: Nk }, (_, k) => k); // a complete row
    const progress: number[] = [];
    const m = wrap(fromRowSets('test', { B: 1, H: 1, Nq, Nk, blockQ: 16, blockK: 64 }, (q) => sets[q]!, (f) => progress.push(f)));
    await expectDense(m, (_b, _h, q, k) => sets[q]!.includes(k));
    expect(progress.length).toBe(m.qBlocks);
    expect(progress.at(-1)).toBe(1);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!).toBeGreaterThan(progress[i - 1]!);
  });
});

describe('neighborhood builder vs the NATTEN reference matrix', () => {
  const CASES = [
    { size: [150], kernelSize: [17], stride: [1], dilation: [1], causal: [false], blocks: [16, 64] },
    { size: [150], kernelSize: [9], stride: [3], dilation: [2], causal: [true], blocks: [64, 16] },
    { size: [12, 13], kernelSize: [5, 3], stride: [1, 2], dilation: [1, 2], causal: [false, true], blocks: [32, 32] },
    { size: [4, 6, 7], kernelSize: [3, 3, 5], stride: [1, 1, 1], dilation: [1, 2, 1], causal: [true, false, false], blocks: [128, 16] },
  ];
  for (const c of CASES)
    it(`size ${c.size} kernel ${c.kernelSize} stride ${c.stride} dilation ${c.dilation} causal ${c.causal} blocks ${c.blocks.join('x')}`, async () => {
      const N = c.size.reduce((a, b) => a * b, 1);
      const want = neighborhoodMatrix(c);
      const { blocks, ...params } = c; // the builder refuses keys it does not know
      const m = BlockMask.neighborhood(params, { blockQ: blocks[0], blockK: blocks[1] });
      await expectDense(m, (_b, _h, q, k) => want[q * N + k] === 1);
    });
});

describe('fromBlocks and fromPredicate', () => {
  for (const [bq, bk] of BLOCKS)
    it(`fromBlocks B=2 H=3 Nq=150 Nk=333 blocks ${bq}x${bk}: listed blocks are full, tails cut`, async () => {
      const Nq = 150;
      const Nk = 333;
      const Qb = Math.ceil(Nq / bq);
      const Kb = Math.ceil(Nk / bk);
      const r = rng(bq * 1000 + bk);
      const grid = Array.from({ length: 2 * 3 * Qb * Kb }, () => r() < 0.35);
      const m = BlockMask.fromBlocks(grid, [2, 3, Qb, Kb], { Nq, Nk, blockQ: bq, blockK: bk });
      await expectDense(m, (b, h, q, k) => grid[((b * 3 + h) * Qb + Math.floor(q / bq)) * Kb + Math.floor(k / bk)]!);
      const { full, partial } = await m.counts();
      expect(partial).toBe(0);
      expect(full).toBe(grid.filter(Boolean).length);
      expect(await m.blockDensity()).toBeCloseTo(full / grid.length, 12);
    });

  it('fromBlocks accepts numbers (nonzero = visible) and B = H = 1', async () => {
    const m = BlockMask.fromBlocks(new Uint8Array([1, 0, 0, 2]), [1, 1, 2, 2], { Nq: 100, Nk: 70 });
    await expectDense(m, (_b, _h, q, k) => (q < 64) === (k < 64));
  });

  for (const [bq, bk] of BLOCKS)
    it(`fromPredicate B=2 H=2 Nq=97 Nk=161 blocks ${bq}x${bk}: per-(b, h) patterns, empty and complete blocks`, async () => {
      const Nq = 97;
      const Nk = 161;
      const f: Pred = (b, h, q, k) => {
        if (b === 1 && h === 0) return k <= q; // causal-ish
        if (b === 0 && h === 1) return false; // nothing
        if (b === 1 && h === 1) return true; // everything
        return ((q * 31 + k * 17) % 7) < 3 || (q < 20 && k < 40); // scattered plus a solid corner
      };
      const progress: number[] = [];
      const m = BlockMask.fromPredicate(f, { B: 2, H: 2, Nq, Nk, blockQ: bq, blockK: bk, onProgress: (x) => progress.push(x) });
      expect(m.B).toBe(2);
      expect(m.H).toBe(2);
      await expectDense(m, f);
      expect(progress.at(-1)).toBe(1);
      expect(progress.length).toBe(2 * 2 * m.qBlocks);
    });

  it('fromPredicate is evaluated once per element', () => {
    let calls = 0;
    BlockMask.fromPredicate(() => (calls++, true), { B: 2, H: 3, Nq: 70, Nk: 50, blockQ: 32, blockK: 16 });
    expect(calls).toBe(2 * 3 * 70 * 50);
  });
});

describe('and / or', () => {
  const Nq = 130;
  const Nk = 100;
  const opts = { blockQ: 32, blockK: 64 };
  const fa: Pred = (b, _h, q, k) => (q + k + b) % 3 !== 0 || k < 10;
  const fb: Pred = (_b, h, q, k) => k <= q - 20 + 15 * h;
  const a = () => BlockMask.fromPredicate(fa, { B: 2, H: 1, Nq, Nk, ...opts });
  const b = () => BlockMask.fromPredicate(fb, { B: 1, H: 3, Nq, Nk, ...opts });

  it('and broadcasts B and H of 1', async () => {
    const m = a().and(b());
    expect([m.B, m.H]).toEqual([2, 3]);
    await expectDense(m, (bb, h, q, k) => fa(bb, 0, q, k) && fb(0, h, q, k));
  });

  it('or broadcasts B and H of 1', async () => {
    const m = b().or(a());
    expect([m.B, m.H]).toEqual([2, 3]);
    await expectDense(m, (bb, h, q, k) => fa(bb, 0, q, k) || fb(0, h, q, k));
  });

  it('combining structured masks: causal and a window, or documents', async () => {
    const c = BlockMask.causal(200, 200, { blockQ: 16, blockK: 128 });
    const w = BlockMask.slidingWindow(200, 200, 50, 50, { blockQ: 16, blockK: 128 });
    await expectDense(c.and(w), (_b, _h, q, k) => k <= q && k >= q - 50);
    const d = BlockMask.documents([50, 0, 150], { blockQ: 16, blockK: 128 });
    await expectDense(c.or(d), (_b, _h, q, k) => k <= q || (q >= 50) === (k >= 50));
    // or with itself and and with itself are identities; and with an empty mask empties everything
    await expectDense(c.and(c), (_b, _h, q, k) => k <= q);
    const none = BlockMask.fromBlocks(new Uint8Array(13 * 2), [1, 1, 13, 2], { Nq: 200, Nk: 200, blockQ: 16, blockK: 128 });
    await expectDense(c.and(none), () => false);
    expect(await c.and(none).counts()).toEqual({ full: 0, partial: 0 });
  });

  it('geometry mismatches are refused', () => {
    const c = BlockMask.causal(64, 64);
    expectError(
      () => c.and(BlockMask.causal(64, 65)),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.and: expected 'other' to have the geometry of this mask (Nq 64, Nk 64, blocks 64x64), received Nq 64, Nk 65, blocks 64x64",
    );
    expectError(
      () => c.or(BlockMask.causal(64, 64, { blockQ: 32 })),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.or: expected 'other' to have the geometry of this mask (Nq 64, Nk 64, blocks 64x64), received Nq 64, Nk 64, blocks 32x64",
    );
    const p2 = BlockMask.fromPredicate(() => true, { B: 2, Nq: 64, Nk: 64 });
    const p3 = BlockMask.fromPredicate(() => true, { B: 3, Nq: 64, Nk: 64 });
    expectError(() => p2.and(p3), 'ERR_ATTNKIT_SHAPE', "BlockMask.and: expected 'other' to have B = 2 or 1, received 3");
    const h2 = BlockMask.fromPredicate(() => true, { H: 2, Nq: 64, Nk: 64 });
    const h4 = BlockMask.fromPredicate(() => true, { H: 4, Nq: 64, Nk: 64 });
    expectError(() => h2.or(h4), 'ERR_ATTNKIT_SHAPE', "BlockMask.or: expected 'other' to have H = 2 or 1, received 4");
  });
});

describe('inspection', () => {
  it('density, blockDensity and counts of a causal mask', async () => {
    const m = BlockMask.causal(256, 256);
    expect(await m.counts()).toEqual({ full: 6, partial: 4 });
    expect(await m.blockDensity()).toBe(10 / 16);
    expect(await m.density()).toBe((256 * 257) / 2 / (256 * 256));
  });

  it('empty geometries: Nq = 0 or Nk = 0', async () => {
    for (const [Nq, Nk] of [
      [0, 100],
      [100, 0],
      [0, 0],
    ] as const) {
      const m = BlockMask.causal(Nq, Nk);
      expect((await m.toDense()).length).toBe(0);
      expect(await m.density()).toBe(0);
      expect(await m.blockDensity()).toBe(0);
      expect(await m.counts()).toEqual({ full: 0, partial: 0 });
    }
    // Nk > 0, rows with no key: present but empty
    const m = BlockMask.slidingWindow(10, 200, 0, 0, { causal: true });
    await expectDense(m, (_b, _h, q, k) => k === q + 190);
  });

  it('buffers are the five int32 tensors of the host lists, on the mask device', async () => {
    const m = BlockMask.causal(200, 150, { blockQ: 32, blockK: 64 });
    const d = await m.host();
    const bufs = m.buffers();
    expect(bufs.length).toBe(5);
    const arrays: ArrayLike<number>[] = [d.fullOffsets, d.fullIndices, d.partialOffsets, d.partialIndices, d.partialBits];
    for (const [i, t] of bufs.entries()) {
      expect(t.dtype).toBe('int32');
      expect(t.device).toBe('cpu');
      expect(t.shape).toEqual([arrays[i]!.length]);
      const got = (await t.toArray()) as Int32Array;
      expect(Array.from(new Uint32Array(got.buffer, got.byteOffset, got.length))).toEqual(Array.from(new Uint32Array(Int32Array.from(arrays[i]!).buffer)));
    }
    expect(m.buffers()).toBe(bufs); // cached
    m.dispose();
    m.dispose(); // idempotent
  });

  it('wordsPerRow is ceil(blockK / 32)', () => {
    for (const [bk, w] of [
      [16, 1],
      [32, 1],
      [64, 2],
      [128, 4],
    ] as const)
      expect(BlockMask.causal(10, 10, { blockK: bk }).wordsPerRow).toBe(w);
  });
});

describe('fromData', () => {
  const g = { B: 1, H: 2, Nq: 100, Nk: 80, blockQ: 64, blockK: 32 };
  // rows: (h 0, qb 0), (h 0, qb 1), (h 1, qb 0), (h 1, qb 1); kBlocks = 3
  const valid = (): BlockMaskData => {
    const bits = new Uint32Array(2 * 64);
    for (let r = 0; r < 64; r++) bits[r] = r < 36 ? (1 << (r % 16)) >>> 0 : 0; // partial block 0 of row 1 (36 query rows)
    for (let r = 0; r < 64; r++) bits[64 + r] = 0x0000ffff; // partial block 2 (16 in-range key columns)
    return {
      fullOffsets: Int32Array.from([0, 2, 2, 2, 3]),
      fullIndices: Int32Array.from([0, 2, 1]),
      partialOffsets: Int32Array.from([0, 0, 1, 1, 2]),
      partialIndices: Int32Array.from([0, 2]),
      partialBits: bits,
    };
  };

  it('a valid mask round-trips through toDense', async () => {
    const m = BlockMask.fromData(g, valid());
    const want = brute(1, 2, 100, 80, (_b, h, q, k) => {
      const qb = q >> 6;
      const kb = k >> 5;
      if (h === 0 && qb === 0) return kb === 0 || kb === 2;
      if (h === 0 && qb === 1) return kb === 0 && k === (q - 64) % 16;
      if (h === 1 && qb === 0) return false;
      return kb === 1 || (kb === 2 && k - 64 < 16);
    });
    expect(firstDiff(m, await m.toDense(), want)).toBe('none');
    expect(await m.counts()).toEqual({ full: 3, partial: 2 });
  });

  it('rejects inconsistent lists with the argument and the values in the message', () => {
    const op = 'BlockMask.fromData';
    const d = valid();
    expectError(
      () => BlockMask.fromData(g, { ...d, fullOffsets: Int32Array.from([0, 2, 2, 3]) }),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'fullOffsets' to have 5 entries from 0 to the index count 3, received 4 entries ending at 3`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, partialOffsets: Int32Array.from([1, 1, 1, 1, 2]) }),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'partialOffsets' to have 5 entries from 0 to the index count 2, received 5 entries ending at 2`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, fullOffsets: Int32Array.from([0, 2, 2, 2, 2]) }),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'fullOffsets' to have 5 entries from 0 to the index count 3, received 5 entries ending at 2`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, fullIndices: Int32Array.from([2, 0, 1]) }),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: expected 'fullIndices' to be increasing key block indices in [0, 3) per row, received 0 in row 0`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, fullIndices: Int32Array.from([0, 0, 1]) }),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: expected 'fullIndices' to be increasing key block indices in [0, 3) per row, received 0 in row 0`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, partialIndices: Int32Array.from([0, 3]) }),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: expected 'partialIndices' to be increasing key block indices in [0, 3) per row, received 3 in row 3`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, partialIndices: Int32Array.from([-1, 2]) }),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: expected 'partialIndices' to be increasing key block indices in [0, 3) per row, received -1 in row 1`,
    );
    expectError(
      () => BlockMask.fromData(g, { ...d, partialBits: new Uint32Array(2 * 64 - 1) }),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'partialBits' to have 128 words (blockQ x ceil(blockK/32) per partial block), received 127`,
    );
    expectError(
      () => BlockMask.fromData({ ...g, H: 0 }, d),
      'ERR_ATTNKIT_SHAPE',
      `${op}: expected 'H' to be a positive integer, received 0`,
    );
    expectError(
      () => BlockMask.fromData({ ...g, blockK: 48 }, d),
      'ERR_ATTNKIT_ARGUMENT',
      `${op}: expected 'blockK' to be a power of two between 16 and 128, received 48`,
    );
  });

  it('rejects offsets that decrease inside the list (the kernel binding refuses them too)', () => {
    // Offsets [0, 3, 1, 3, 3] over indices [0, 1, 2]: first and last entries are consistent and
    // every row's slice is increasing, but row 1 runs backwards and rows 0 and 2 share entries.
    const d = valid();
    let err: unknown;
    try {
      BlockMask.fromData(g, { ...d, fullOffsets: Int32Array.from([0, 3, 1, 3, 3]), fullIndices: Int32Array.from([0, 1, 2]) });
    } catch (e) {
      err = e;
    }
    expect(err, 'fromData accepted decreasing offsets').toBeInstanceOf(AttnkitError);
    expect((err as AttnkitError).code).toBe('ERR_ATTNKIT_ARGUMENT');
    expect((err as AttnkitError).message).toBe("BlockMask.fromData: expected 'fullOffsets' to be non-decreasing, received 3 then 1 at row 1");
  });
});

describe('argument errors', () => {
  const cases: [string, (bs: number) => unknown][] = [
    ['BlockMask.causal', (bs) => BlockMask.causal(100, 100, { blockQ: bs })],
    ['BlockMask.slidingWindow', (bs) => BlockMask.slidingWindow(100, 100, 4, 4, { blockQ: bs })],
    ['BlockMask.documents', (bs) => BlockMask.documents([50, 50], { blockQ: bs })],
    ['BlockMask.fromBlocks', (bs) => BlockMask.fromBlocks([1], [1, 1, 1, 1], { Nq: 10, Nk: 10, blockQ: bs })],
    ['BlockMask.fromPredicate', (bs) => BlockMask.fromPredicate(() => true, { Nq: 10, Nk: 10, blockQ: bs })],
    ['BlockMask.neighborhood', (bs) => BlockMask.neighborhood({ size: [20], kernelSize: [3] }, { blockQ: bs })],
  ];
  for (const [op, build] of cases)
    for (const bs of [48, 8, 256, 0, 64.5, 96])
      it(`${op}: blockQ ${bs} is refused`, () => {
        expectError(() => build(bs), 'ERR_ATTNKIT_ARGUMENT', `${op}: expected 'blockQ' to be a power of two between 16 and 128, received ${bs}`);
      });

  it('blockK is checked the same way', () => {
    expectError(
      () => BlockMask.causal(100, 100, { blockK: 12 }),
      'ERR_ATTNKIT_ARGUMENT',
      "BlockMask.causal: expected 'blockK' to be a power of two between 16 and 128, received 12",
    );
  });

  it('lengths, windows and shapes', () => {
    expectError(() => BlockMask.causal(-1, 10), 'ERR_ATTNKIT_SHAPE', "BlockMask.causal: expected 'Nq' to be a non-negative integer, received -1");
    expectError(() => BlockMask.causal(10, 2.5), 'ERR_ATTNKIT_SHAPE', "BlockMask.causal: expected 'Nk' to be a non-negative integer, received 2.5");
    expectError(
      () => BlockMask.slidingWindow(10, 10, -2, 0),
      'ERR_ATTNKIT_ARGUMENT',
      "BlockMask.slidingWindow: expected 'left' to be an integer >= -1 (-1 = unbounded), received -2",
    );
    expectError(
      () => BlockMask.slidingWindow(10, 10, 0, 1.5),
      'ERR_ATTNKIT_ARGUMENT',
      "BlockMask.slidingWindow: expected 'right' to be an integer >= -1 (-1 = unbounded), received 1.5",
    );
    expectError(
      () => BlockMask.documents([3, -1]),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.documents: expected 'seqLens[1]' to be a non-negative integer, received -1",
    );
    expectError(
      () => BlockMask.documents(5 as unknown as number[]),
      'ERR_ATTNKIT_ARGUMENT',
      "BlockMask.documents: expected 'seqLens' to be an array of lengths, received number",
    );
    expectError(
      () => BlockMask.fromBlocks([1, 1], [1, 1, 1, 2], { Nq: 100, Nk: 100 }),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.fromBlocks: expected 'shape' to be [B, H, 2, 2] (ceil(Nq/blockQ), ceil(Nk/blockK)), received [1, 1, 1, 2]",
    );
    expectError(
      () => BlockMask.fromBlocks([1, 1, 1], [1, 1, 2, 2], { Nq: 100, Nk: 100 }),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.fromBlocks: expected 'blocks' to hold 4 entries (the shape's product), received 3",
    );
    expectError(
      () => BlockMask.fromPredicate(5 as unknown as Pred, { Nq: 10, Nk: 10 }),
      'ERR_ATTNKIT_ARGUMENT',
      "BlockMask.fromPredicate: expected 'fn' to be a function (b, h, q, k) => boolean, received number",
    );
    expectError(
      () => BlockMask.fromPredicate(() => true, { B: 0, Nq: 10, Nk: 10 }),
      'ERR_ATTNKIT_SHAPE',
      "BlockMask.fromPredicate: expected 'B' to be a positive integer, received 0",
    );
  });
});

describe('build time of structured masks at N = 65536, 64 x 64 blocks', () => {
  const N = 65536;
  const timed = (fn: () => BlockMask) => {
    const t0 = performance.now();
    const m = fn();
    return { m, ms: performance.now() - t0 };
  };
  it('causal builds in well under a second', async () => {
    fn0(); // warm the JIT on a small instance
    const { m, ms } = timed(() => BlockMask.causal(N, N));
    expect(ms).toBeLessThan(1000);
    const nb = N / 64;
    expect(await m.counts()).toEqual({ full: (nb * (nb - 1)) / 2, partial: nb });
  });
  it('slidingWindow builds in well under a second', async () => {
    const { m, ms } = timed(() => BlockMask.slidingWindow(N, N, 1000, 0, { causal: true }));
    expect(ms).toBeLessThan(1000);
    // every query block sees between 16 and 17 key blocks (window 1001 keys)
    const d = m._host('test');
    for (let r = 0; r < m.qBlocks; r++) {
      const n = d.fullOffsets[r + 1]! - d.fullOffsets[r]! + d.partialOffsets[r + 1]! - d.partialOffsets[r]!;
      expect(n).toBeLessThanOrEqual(17);
    }
  });
  it('documents builds in well under a second', () => {
    const lens = Array.from({ length: 64 }, (_, i) => (i % 2 ? 1000 : 1048));
    expect(lens.reduce((a, b) => a + b, 0)).toBe(N);
    const { ms } = timed(() => BlockMask.documents(lens, { causal: true }));
    expect(ms).toBeLessThan(1000);
  });
  function fn0() {
    BlockMask.causal(1024, 1024);
    BlockMask.slidingWindow(1024, 1024, 100, 0, { causal: true });
  }
});

describe('maskToSvg (attnkit mask --svg)', () => {
  const count = (svg: string, cls: string) => {
    const m = svg.match(new RegExp(`<g class="${cls}"[^>]*>(.*?)</g>`, 'gs')) ?? [];
    return m.reduce((n, g) => n + (g.match(/<rect /g)?.length ?? 0), 0);
  };

  it('a small mask: one panel per (b, h), runs of full blocks merged, the element pattern inside partial blocks', async () => {
    const m = BlockMask.causal(200, 200, { blockQ: 32, blockK: 64 }).and(
      BlockMask.fromPredicate((_b, h, q, k) => h === 0 || k >= q - 100, { H: 2, Nq: 200, Nk: 200, blockQ: 32, blockK: 64 }),
    );
    const svg = await maskToSvg(m, { title: 'causal & <window> "h1"' });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('causal &amp; &lt;window&gt; &quot;h1&quot;');
    expect(svg.match(/<g data-b="0" data-h="\d">/g)?.length).toBe(2);
    // rows of the element pattern: every visible element is covered by exactly one run
    const dense = await m.toDense();
    const runs = [...svg.matchAll(/<g class="elements"[^>]*>(.*?)<\/g>/gs)].map((g) => g[1]!);
    expect(runs.length).toBe(2);
    const st = 512 / 200;
    for (const [h, body] of runs.entries()) {
      let covered = 0;
      for (const r of body.matchAll(/width="([\d.]+)"/g)) covered += Math.round(Number(r[1]) / st);
      let partialVisible = 0;
      const d = m._host('test');
      for (let qb = 0; qb < m.qBlocks; qb++) {
        const row = h * m.qBlocks + qb;
        for (let i = d.partialOffsets[row]!; i < d.partialOffsets[row + 1]!; i++) {
          const kb = d.partialIndices[i]!;
          for (let q = qb * 32; q < Math.min(200, qb * 32 + 32); q++)
            for (let k = kb * 64; k < Math.min(200, kb * 64 + 64); k++) partialVisible += dense[(h * 200 + q) * 200 + k]!;
        }
      }
      expect(covered, `h ${h}`).toBe(partialVisible);
    }
    expect(count(svg, 'full')).toBeGreaterThan(0);
    expect(count(svg, 'partial')).toBeGreaterThan(0);
  });

  it('a large mask: no element pattern, merged runs keep it small and fast', async () => {
    const t0 = performance.now();
    const m = BlockMask.causal(65536, 65536);
    const svg = await maskToSvg(m);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(svg).not.toContain('class="elements"');
    expect(svg).not.toContain('class="grid"'); // 1024 x 1024 blocks: no grid lines
    // one full run and one partial block per block row
    expect(count(svg, 'full')).toBe(1023);
    expect(count(svg, 'partial')).toBe(1024);
    expect(svg.length).toBeLessThan(400_000);
  });

  it('many panels: at most maxPanels drawn, the rest counted', async () => {
    const m = BlockMask.fromPredicate((b, h, q, k) => (q + k + b + h) % 5 === 0, { B: 3, H: 4, Nq: 40, Nk: 40, blockQ: 16, blockK: 16 });
    const svg = await maskToSvg(m, { maxPanels: 5, columns: 2 });
    expect(svg.match(/<g data-b=/g)?.length).toBe(5);
    expect(svg).toContain('showing 5 of 12 (b, h) panels');
  });
});
