// Measures how fast a 5.6 MB tensor (the seed CNN's 1,413,834 float32 parameters) crosses the
// Train stream on loopback, against a raw TCP socket as the ceiling.
//
// A plain node script, not a vitest test: timings need a quiet process. Build first:
//   cd packages/protocol && npx tsc -p tsconfig.build.json && node bench/transfer.bench.mjs
// "Recommended settings" rows use what the README recommends: CoordinatorServiceDefinition /
// CoordinatorClient, assemblers with reuseBuffer, CHANNEL_OPTIONS, and SERVER_OPTIONS plus
// applyServerFlowControlWindow.
// Both processes run with the heap tuning Shardline's CLIs apply (tuneHeapForStreaming from
// @shardline/core/heap), as every row streams megabytes of short-lived buffers.
// Flags: --rounds N (default 3), --reps N (timed transfers per row and round, default 10),
//        --only TEXT (run only the rows whose label contains TEXT; profile with node --cpu-prof),
//        --default-heap (leave V8's heap growth as it is, to see what the tuning is worth).
//
// The receiving side runs in a child process (its own event loop, as a coordinator and a worker
// would). A row times one whole transfer: the sender chunks (CRC-32 included), encodes and
// writes; bytes cross loopback; the receiver decodes, checks and reassembles (CRC-32 again),
// then acknowledges with a tiny message. "up" is worker -> coordinator (a gradient: client to
// server), "down" is coordinator -> worker (weights: server to client). Rows run in rounds, one
// of each row per round, so drift in machine load hits every row alike; the figure is the payload
// size over the median time of all its transfers.
import { fork } from 'node:child_process';
import net from 'node:net';
import {
  credentials,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
} from '@grpc/grpc-js';
import { tuneHeapForStreaming } from '@shardline/core/heap';
import {
  applyServerFlowControlWindow,
  CHANNEL_OPTIONS,
  CoordinatorClient,
  CoordinatorServiceClient,
  CoordinatorServiceDefinition,
  CoordinatorServiceService,
  CRC32_IMPLEMENTATION,
  crc32,
  createTensorAssembler,
  DataType,
  encodeTensor,
  gradientMessages,
  SERVER_OPTIONS,
  weightsMessages,
  writeMessages,
} from '../dist/index.js';

const PARAMS = 1_413_834;
const BYTES = PARAMS * 4;
const KiB = 1024;
const MiB = 1024 * KiB;
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};

// In the receiving child too: it runs this same file.
if (!args.includes('--default-heap')) tuneHeapForStreaming();

const meta = {
  dtype: DataType.FLOAT32,
  shape: [PARAMS],
  elementCount: PARAMS,
  layoutFingerprint: '0123456789abcdef',
  version: 1n,
  step: 1n,
};
const values = Float32Array.from({ length: PARAMS }, (_, i) => Math.sin(i));
const payload = encodeTensor(values);
const result = { sampleCount: 32, loss: 0.5, correct: 16, computeSeconds: 0.1 };
const ack = {
  kind: {
    $case: 'assignment',
    value: {
      step: 1n,
      epoch: 0,
      stepInEpoch: 0,
      rank: 0,
      worldSize: 1,
      globalBatchSize: 32,
      weightsVersion: 1n,
    },
  },
};

// Lets a single unchunked 5.6 MB message through, for the "one message" rows.
const BIG_MESSAGES = {
  'grpc.max_send_message_length': 16 * MiB,
  'grpc.max_receive_message_length': 16 * MiB,
};

// grpc-js with no protobuf and no checks at all: the transport's own ceiling.
const identity = (buffer) => buffer;
const RawService = {
  stream: {
    path: '/bench.Raw/Stream',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** One whole-tensor chunk, beyond the protocol's 4 MiB chunk limit, for the "one message" rows. */
function wholeChunk() {
  return {
    transferId: `whole-${Math.random()}`,
    chunkIndex: 0,
    chunkCount: 1,
    byteOffset: 0,
    totalBytes: BYTES,
    meta,
    data: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
    payloadCrc32: crc32(payload),
  };
}

function weightsMessagesAnySize(chunkBytes) {
  return chunkBytes <= 4 * MiB
    ? weightsMessages(meta, payload, chunkBytes)
    : [{ kind: { $case: 'weights', value: { chunk: wholeChunk() } } }];
}

function gradientMessagesAnySize(chunkBytes) {
  return chunkBytes <= 4 * MiB
    ? gradientMessages(meta, payload, result, chunkBytes)
    : [{ kind: { $case: 'gradient', value: { result, chunk: wholeChunk() } } }];
}

// ------------------------------------------------------------------------------------------
// Receiver (child process): a raw TCP sink and gRPC servers with the presets: generated or
// one-copy Train serializers, with or without applyServerFlowControlWindow.

const trainImplementation = {
  train(call) {
    let mode;
    let assembler;
    call.on('data', (message) => {
      const kind = message.kind;
      if (kind?.$case === 'attach') {
        // The bench passes its row's settings in the worker id.
        mode = JSON.parse(kind.value.workerId);
        assembler = createTensorAssembler({
          maxTensorBytes: BYTES,
          maxChunkBytes: 16 * MiB,
          reuseBuffer: mode.reuseBuffer,
        });
      } else if (kind?.$case === 'gradient') {
        if (assembler.push(kind.value.chunk)) call.write(ack);
      } else if (kind?.$case === 'heartbeat') {
        call.pause();
        writeMessages(call, weightsMessagesAnySize(mode.chunkBytes)).then(
          () => call.resume(),
          (error) => call.emit('error', error),
        );
      }
    });
    call.on('end', () => call.end());
  },
  join: (_call, callback) => callback(null, {}),
  leave: (_call, callback) => callback(null, {}),
  getStatus: (_call, callback) => callback(null, {}),
};

const rawImplementation = {
  stream(call) {
    let received = 0;
    call.on('data', (data) => {
      received += data.length;
      while (received >= BYTES) {
        received -= BYTES;
        call.write(Buffer.from('k'));
      }
    });
    call.on('end', () => call.end());
  },
};

async function startGrpc({ raiseWindow, oneCopy }) {
  const server = new Server({ ...SERVER_OPTIONS, ...BIG_MESSAGES });
  server.addService(
    oneCopy ? CoordinatorServiceDefinition : CoordinatorServiceService,
    trainImplementation,
  );
  server.addService(RawService, rawImplementation);
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  // grpc-js 1.14 servers ignore grpc-node.flow_control_window (grpc/grpc-node#3058).
  if (raiseWindow && !applyServerFlowControlWindow(server)) throw new Error('window not applied');
  return port;
}

async function serve() {
  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    let received = 0;
    socket.on('data', (data) => {
      received += data.length;
      while (received >= BYTES) {
        received -= BYTES;
        socket.write('k');
      }
    });
  });
  await new Promise((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  process.send({
    tcpPort: tcp.address().port,
    grpcPort: await startGrpc({ raiseWindow: false, oneCopy: false }),
    oneCopyPort: await startGrpc({ raiseWindow: false, oneCopy: true }),
    oneCopyWidePort: await startGrpc({ raiseWindow: true, oneCopy: true }),
  });
  // The parent asks for this process's CPU time around each row.
  process.on('message', () => process.send(process.cpuUsage()));
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------------------------------
// Sender (parent process). Each row is an object with open() -> { once(), close() }.

async function rawTcpRow(port) {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise((resolve) => socket.once('connect', resolve));
  let waiting;
  socket.on('data', (data) => {
    for (let i = 0; i < data.length; i++) waiting?.();
  });
  return {
    once: () =>
      new Promise((resolve) => {
        waiting = resolve;
        socket.write(payload);
      }),
    close: () => socket.destroy(),
  };
}

async function rawGrpcRow(port, channelOptions) {
  const Client = makeGenericClientConstructor(RawService, 'Raw');
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), {
    ...channelOptions,
    ...BIG_MESSAGES,
  });
  const call = client.stream();
  let waiting;
  call.on('data', () => waiting?.());
  call.on('error', () => {});
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    once: () =>
      new Promise((resolve) => {
        waiting = resolve;
        for (let offset = 0; offset < BYTES; offset += MiB) {
          call.write(view.subarray(offset, Math.min(BYTES, offset + MiB)));
        }
      }),
    close: () => {
      call.end();
      client.close();
    },
  };
}

async function trainRow(
  port,
  { direction, chunkBytes, channelOptions, reuseBuffer = false, oneCopy = false },
) {
  const Client = oneCopy ? CoordinatorClient : CoordinatorServiceClient;
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), {
    ...channelOptions,
    ...BIG_MESSAGES,
  });
  const call = client.train();
  call.write({
    kind: { $case: 'attach', value: { workerId: JSON.stringify({ chunkBytes, reuseBuffer }) } },
  });
  const assembler = createTensorAssembler({
    maxTensorBytes: BYTES,
    maxChunkBytes: 16 * MiB,
    reuseBuffer,
  });
  let waiting;
  call.on('data', (message) => {
    if (message.kind?.$case === 'assignment') waiting?.();
    else if (message.kind?.$case === 'weights' && assembler.push(message.kind.value.chunk)) {
      waiting?.();
    }
  });
  call.on('error', () => {}); // the child exits first at the very end
  return {
    once: async () => {
      const done = new Promise((resolve) => {
        waiting = resolve;
      });
      if (direction === 'up') await writeMessages(call, gradientMessagesAnySize(chunkBytes));
      else call.write({ kind: { $case: 'heartbeat', value: { step: 1n, unixTimeMs: 0n } } });
      await done;
    },
    close: () => {
      call.end();
      client.close();
    },
  };
}

async function main() {
  const rounds = flag('rounds', 3);
  const reps = flag('reps', 10);
  const child = fork(
    new URL(import.meta.url),
    ['--serve', ...args.filter((a) => a === '--default-heap')],
    { stdio: 'inherit' },
  );
  const ports = await new Promise((resolve) => child.once('message', resolve));
  const { 'grpc-node.flow_control_window': _window, ...defaultWindow } = CHANNEL_OPTIONS;
  const chunkLabel = (bytes) =>
    bytes === BYTES ? 'one 5.6 MB message' : `${bytes / KiB} KiB chunks`;

  const rows = [['raw TCP socket', () => rawTcpRow(ports.tcpPort)]];
  const row = (label, open) => rows.push([label, open]);
  row('grpc-js bytes, no protobuf, 1 MiB messages (transport ceiling)', () =>
    rawGrpcRow(ports.grpcPort, CHANNEL_OPTIONS),
  );
  row('grpc-js bytes, no protobuf, server window raised (applyServerFlowControlWindow)', () =>
    rawGrpcRow(ports.oneCopyWidePort, CHANNEL_OPTIONS),
  );
  const presets = { channelOptions: CHANNEL_OPTIONS };
  // What the README recommends: one-copy serializers, a reused receive buffer, raised windows.
  const recommended = { ...presets, oneCopy: true, reuseBuffer: true };
  for (const direction of ['up', 'down']) {
    for (const chunkBytes of [256 * KiB, MiB, 4 * MiB, BYTES]) {
      row(`Train ${direction}, ${chunkLabel(chunkBytes)}, generated serializers`, () =>
        trainRow(ports.grpcPort, { ...presets, direction, chunkBytes }),
      );
    }
    row(`Train ${direction}, 1024 KiB chunks, one-copy serializers`, () =>
      trainRow(ports.oneCopyPort, { ...presets, direction, chunkBytes: MiB, oneCopy: true }),
    );
    if (direction === 'up') {
      row('Train up, 1024 KiB chunks, one-copy, server window raised', () =>
        trainRow(ports.oneCopyWidePort, { ...presets, direction, chunkBytes: MiB, oneCopy: true }),
      );
    } else {
      row('Train down, 1024 KiB chunks, one-copy, client window left at 64 KiB', () =>
        trainRow(ports.oneCopyPort, {
          channelOptions: defaultWindow,
          direction,
          chunkBytes: MiB,
          oneCopy: true,
        }),
      );
    }
    for (const chunkBytes of [MiB, 4 * MiB]) {
      row(`Train ${direction}, ${chunkLabel(chunkBytes)}, recommended settings`, () =>
        trainRow(ports.oneCopyWidePort, { ...recommended, direction, chunkBytes }),
      );
    }
  }

  const childCpu = () =>
    new Promise((resolve) => {
      child.once('message', ({ user, system }) => resolve(user + system));
      child.send('cpu');
    });
  const ownCpu = () => {
    const { user, system } = process.cpuUsage();
    return user + system;
  };
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
  if (only) rows.splice(0, rows.length, ...rows.filter(([label]) => label.includes(only)));
  const samples = rows.map(() => []);
  const cpuMicros = rows.map(() => 0);
  for (let round = 0; round < rounds; round++) {
    for (const [i, [label, open]] of rows.entries()) {
      const row = await open();
      for (let w = 0; w < 3; w++) await row.once(); // warm up: JIT, TCP, HTTP/2 windows
      const cpuBefore = ownCpu() + (await childCpu());
      for (let r = 0; r < reps; r++) {
        const start = performance.now();
        await row.once();
        samples[i].push(performance.now() - start);
      }
      cpuMicros[i] += ownCpu() + (await childCpu()) - cpuBefore;
      row.close();
      if (round === rounds - 1) console.error(`${label}: done`);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const tcpIndex = rows.findIndex(([label]) => label === 'raw TCP socket');
  const tcpMs = tcpIndex >= 0 ? median(samples[tcpIndex]) : Number.NaN;
  console.table(
    rows.map(([label], i) => {
      const ms = median(samples[i]);
      return {
        transfer: label,
        'median ms': Number(ms.toFixed(2)),
        'GB/s': Number((BYTES / ms / 1e6).toFixed(2)),
        'of raw TCP': Number.isNaN(tcpMs) ? '-' : `${Math.round((100 * tcpMs) / ms)}%`,
        // Both processes together: on a busy machine the wall-clock figures swing with other
        // load, CPU time per transfer much less.
        'CPU ms': Number((cpuMicros[i] / 1000 / samples[i].length).toFixed(2)),
      };
    }),
  );
  console.log(
    `${rounds} rounds x ${reps} transfers of ${BYTES.toLocaleString('en-US')} bytes per row; ` +
      `CRC-32: ${CRC32_IMPLEMENTATION}; heap growth: ${args.includes('--default-heap') ? "V8's default" : 'tuned'}`,
  );
  child.disconnect();
}

if (args.includes('--serve')) await serve();
else await main();
