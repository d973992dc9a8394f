import { describe, expect, it } from 'vitest';
import { hasErrorCode, isShardlineError, ShardlineError, toShardlineError } from '../src/errors.js';

describe('toShardlineError', () => {
  it('passes Shardline errors through unchanged', () => {
    const original = new ShardlineError('MISMATCH', 'a');
    expect(toShardlineError(original)).toBe(original);
  });

  it('maps Node system errors to a fitting code and keeps the cause', () => {
    const enoent = Object.assign(new Error('no such file'), { code: 'ENOENT' });
    const converted = toShardlineError(enoent);
    expect(converted.code).toBe('NOT_FOUND');
    expect(converted.cause).toBe(enoent);
    expect(toShardlineError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })).code).toBe(
      'NETWORK',
    );
  });

  it('wraps non-errors as INTERNAL', () => {
    const converted = toShardlineError({ weird: true });
    expect(converted.code).toBe('INTERNAL');
    expect(converted.message).toContain('weird');
  });

  it('recognises errors by brand and code, not by instanceof alone', () => {
    const foreign = Object.assign(new Error('x'), {
      [Symbol.for('shardline.error')]: true,
      code: 'NUMERIC',
    });
    expect(isShardlineError(foreign)).toBe(true);
    expect(hasErrorCode(foreign, 'NUMERIC')).toBe(true);
    expect(hasErrorCode(new Error('x'), 'NUMERIC')).toBe(false);
  });
});
