/**
 * docs/errors.md read as data: the documented codes, and per code its example call (when the
 * example is run here) and exact message. Shared by test/errors.test.ts and the fuzz, whose errors
 * must carry a documented code.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './dist.ts';

export interface DocumentedError {
  code: string;
  /** The example call, as a JavaScript expression over the public API; undefined when not run here. */
  call: string | undefined;
  message: string;
}

export function documentedErrors(): DocumentedError[] {
  const text = readFileSync(join(root, 'docs', 'errors.md'), 'utf8');
  return text
    .split(/^## /m)
    .slice(1)
    .map((section) => {
      const code = section.split('\n')[0]!.trim();
      const call = /^Example: `(.+)`$/m.exec(section)?.[1];
      const message = /^> (.+)$/m.exec(section)?.[1] ?? '';
      return { code, call, message };
    });
}
