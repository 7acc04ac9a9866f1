/**
 * The assertion every error test shares: `fn` throws an AttnkitError (an Error named AttnkitError)
 * with the expected code and op, the argument when one is named, and a message that starts with
 * the op and holds the given parts (or equals `message`).
 */
import { expect } from 'vitest';
import { AttnkitError } from '../../src/index.ts';

export interface Expect {
  code: string;
  op: string;
  argument?: string | undefined;
  /** substrings the message must contain */
  has?: string[];
  /** the exact message */
  message?: string;
}

export function expectError(fn: () => unknown, want: Expect): AttnkitError {
  let caught: unknown = 'did not throw';
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  if (!(caught instanceof AttnkitError))
    expect.fail(`expected an AttnkitError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  const e = caught;
  expect(e.name).toBe('AttnkitError');
  expect({ code: e.code, op: e.op }).toEqual({ code: want.code, op: want.op });
  if ('argument' in want) expect(e.argument).toBe(want.argument);
  if (want.message !== undefined) expect(e.message).toBe(want.message);
  for (const s of want.has ?? []) expect(e.message).toContain(s);
  // every message starts with the op name
  expect(e.message.startsWith(`${want.op}: `) || e.message.startsWith(`${want.op} `)).toBe(true);
  return e;
}
