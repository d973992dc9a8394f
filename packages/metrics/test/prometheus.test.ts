import { describe, expect, it } from 'vitest';
import { createRegistry, PROMETHEUS_CONTENT_TYPE } from '../src/index.js';
import { expectShardlineError } from './helpers.js';

describe('createRegistry', () => {
  it('renders counters, gauges and histograms in text format 0.0.4, exactly', () => {
    const registry = createRegistry();
    const images = registry.counter({
      name: 'shardline_images_total',
      help: 'Images trained on, by worker.',
      labelNames: ['worker'],
    });
    images.inc({ worker: 'w1' }, 64);
    images.inc({ worker: 'w1' });
    // Label values escape backslash, double quote and newline.
    images.inc({ worker: 'a\\b"c\nd' }, 2);

    // HELP escapes backslash and newline, but not quotes.
    const rate = registry.gauge({
      name: 'shardline_images_per_second',
      help: 'Smoothed "rate".\nIn images/s, C:\\ style.',
    });
    rate.set(1234.5);
    registry.gauge({ name: 'shardline_up', help: 'Untouched: renders 0.' });
    const loss = registry.gauge({
      name: 'shardline_loss',
      help: 'Loss.',
      labelNames: ['split', 'epoch'],
    });
    loss.set({ split: 'test', epoch: 3 }, Number.NaN);
    loss.set({ split: 'train', epoch: 3 }, Number.POSITIVE_INFINITY);

    const step = registry.histogram({
      name: 'shardline_step_seconds',
      help: 'Step time.',
      buckets: [0.125, 0.5, 1],
    });
    // 0.0625 and 0.125 (le is inclusive) -> le 0.125; 0.75 -> le 1; 3 -> only +Inf. Sum 3.9375.
    for (const v of [0.0625, 0.125, 0.75, 3]) step.observe(v);
    const rtt = registry.histogram({
      name: 'rpc_seconds',
      help: 'RPC time.',
      labelNames: ['method'],
      buckets: [1],
    });
    rtt.observe({ method: 'Push' }, 0.5);

    expect(registry.render()).toBe(
      [
        '# HELP shardline_images_total Images trained on, by worker.',
        '# TYPE shardline_images_total counter',
        'shardline_images_total{worker="w1"} 65',
        'shardline_images_total{worker="a\\\\b\\"c\\nd"} 2',
        '# HELP shardline_images_per_second Smoothed "rate".\\nIn images/s, C:\\\\ style.',
        '# TYPE shardline_images_per_second gauge',
        'shardline_images_per_second 1234.5',
        '# HELP shardline_up Untouched: renders 0.',
        '# TYPE shardline_up gauge',
        'shardline_up 0',
        '# HELP shardline_loss Loss.',
        '# TYPE shardline_loss gauge',
        'shardline_loss{split="test",epoch="3"} NaN',
        'shardline_loss{split="train",epoch="3"} +Inf',
        '# HELP shardline_step_seconds Step time.',
        '# TYPE shardline_step_seconds histogram',
        'shardline_step_seconds_bucket{le="0.125"} 2',
        'shardline_step_seconds_bucket{le="0.5"} 2',
        'shardline_step_seconds_bucket{le="1"} 3',
        'shardline_step_seconds_bucket{le="+Inf"} 4',
        'shardline_step_seconds_sum 3.9375',
        'shardline_step_seconds_count 4',
        '# HELP rpc_seconds RPC time.',
        '# TYPE rpc_seconds histogram',
        'rpc_seconds_bucket{method="Push",le="1"} 1',
        'rpc_seconds_bucket{method="Push",le="+Inf"} 1',
        'rpc_seconds_sum{method="Push"} 0.5',
        'rpc_seconds_count{method="Push"} 1',
        '',
      ].join('\n'),
    );
    expect(PROMETHEUS_CONTENT_TYPE).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('renders an untouched unlabelled histogram as zero buckets, and a labelled metric as headers only', () => {
    const registry = createRegistry();
    registry.histogram({ name: 'h', help: 'H.', buckets: [1] });
    registry.counter({ name: 'c_total', help: 'C.', labelNames: ['x'] });
    expect(registry.render()).toBe(
      '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 0\nh_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n' +
        '# HELP c_total C.\n# TYPE c_total counter\n',
    );
    expect(createRegistry().render()).toBe('');
  });

  it('supports gauge inc/dec, get and reset', () => {
    const registry = createRegistry();
    const g = registry.gauge({ name: 'workers', help: 'Active workers.', labelNames: ['state'] });
    g.inc({ state: 'up' });
    g.inc({ state: 'up' }, 2);
    g.dec({ state: 'up' });
    expect(g.get({ state: 'up' })).toBe(2);
    expect(g.get({ state: 'down' })).toBe(0);
    const h = registry.histogram({ name: 'x_seconds', help: 'X.', buckets: [1, 2] });
    h.observe(1.5);
    expect(h.get()).toEqual({
      buckets: [
        { le: 1, count: 0 },
        { le: 2, count: 1 },
        { le: Number.POSITIVE_INFINITY, count: 1 },
      ],
      sum: 1.5,
      count: 1,
    });
    g.reset();
    expect(registry.render()).not.toContain('workers{');
  });

  it('validates names, labels and values', () => {
    const registry = createRegistry();
    expectShardlineError(
      () => registry.counter({ name: '1bad', help: '' }),
      'INVALID_ARGUMENT',
      'Metric name "1bad" is invalid',
    );
    expectShardlineError(
      () => registry.gauge({ name: 'a-b', help: '' }),
      'INVALID_ARGUMENT',
      'is invalid',
    );
    expectShardlineError(
      () => registry.gauge({ name: 'ok', help: '', labelNames: ['__reserved'] }),
      'INVALID_ARGUMENT',
      'Label name "__reserved" of ok is invalid',
    );
    expectShardlineError(
      () => registry.histogram({ name: 'h', help: '', labelNames: ['le'] }),
      'INVALID_ARGUMENT',
      "cannot have a label named 'le'",
    );
    expectShardlineError(
      () => registry.histogram({ name: 'h2', help: '', buckets: [1, 1] }),
      'INVALID_ARGUMENT',
      'strictly increasing',
    );

    registry.histogram({ name: 'step', help: '' });
    expectShardlineError(
      () => registry.gauge({ name: 'step', help: '' }),
      'INVALID_ARGUMENT',
      'clashes',
    );
    expectShardlineError(
      () => registry.counter({ name: 'step_count', help: '' }),
      'INVALID_ARGUMENT',
      'which renders step_count',
    );

    const c = registry.counter({ name: 'c_total', help: '', labelNames: ['worker'] });
    expectShardlineError(
      () => c.inc({ worker: 'w', extra: 'x' }),
      'INVALID_ARGUMENT',
      'unexpected extra',
    );
    expectShardlineError(() => c.inc({}), 'INVALID_ARGUMENT', 'missing worker');
    expectShardlineError(
      () => c.inc({ worker: 'w' }, -1),
      'INVALID_ARGUMENT',
      'Use a gauge for values that go down',
    );
    const h = registry.histogram({ name: 'h3', help: '' });
    expectShardlineError(() => h.observe(Number.NaN), 'INVALID_ARGUMENT', 'finite');
  });
});
