import { describe, expect, it } from 'vitest';
import { ShardlineError } from '../src/errors.js';
import { createLogger, parseLogLevel } from '../src/logger.js';

function capture() {
  const lines: string[] = [];
  return { lines, sink: { write: (line: string) => lines.push(line) } };
}

describe('createLogger', () => {
  it('writes one JSON object per line with child fields and serialised errors', () => {
    const { lines, sink } = capture();
    const log = createLogger({ level: 'info', format: 'json', sink, now: () => new Date(0) }).child(
      { rank: 1 },
    );
    log.debug('hidden');
    log.warn('slow step', { err: new ShardlineError('TIMEOUT', 'late') });
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!);
    expect(record).toMatchObject({
      level: 'warn',
      msg: 'slow step',
      rank: 1,
      err: { code: 'TIMEOUT', message: 'late' },
    });
    expect(record.time).toBe('1970-01-01T00:00:00.000Z');
  });

  it('writes readable text lines', () => {
    const { lines, sink } = capture();
    createLogger({ level: 'debug', format: 'text', sink }).info('backend chosen', {
      backend: 'wasm',
      why: 'no gpu here',
    });
    expect(lines[0]).toMatch(/INFO {2}backend chosen backend=wasm why="no gpu here"/);
  });

  it('rejects unknown levels with the list of valid ones', () => {
    expect(() => parseLogLevel('loud')).toThrow(/expected one of debug, info, warn, error, silent/);
  });
});
