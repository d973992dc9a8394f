import { describe, expect, it } from 'vitest';
import { ShardlineError } from '../src/errors.js';
import { createLogger, type LogFormat, logLevelOfLine, parseLogLevel } from '../src/logger.js';

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

describe('logLevelOfLine', () => {
  it.each<LogFormat>(['text', 'json'])(
    'reads back the level of every record the %s format writes',
    (format) => {
      const { lines, sink } = capture();
      const log = createLogger({ level: 'debug', format, sink });
      log.debug('d', { note: 'has spaces' });
      log.info('i');
      log.warn('WARN in the message');
      log.error('e', { err: new ShardlineError('TIMEOUT', 'late') });
      expect(lines.map((line) => logLevelOfLine(line.trimEnd()))).toEqual([
        'debug',
        'info',
        'warn',
        'error',
      ]);
    },
  );

  it('says undefined for lines that are not log records', () => {
    for (const line of [
      'Error: boom',
      '    at main (file.js:1:1)',
      '(node:123) ExperimentalWarning: something',
      'shardline-worker: could not join',
      '{"level":"loud","msg":"x"}',
      '{"level":"toString"}',
      '{not json',
      '',
    ]) {
      expect(logLevelOfLine(line), line).toBeUndefined();
    }
  });
});
