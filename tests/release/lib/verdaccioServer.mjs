#!/usr/bin/env node
/**
 * Runs Verdaccio (the root devDependency) on 127.0.0.1 with a port the kernel picks, and prints
 * `{"port": N}` as the first line on stdout once it listens. Usage:
 *
 *   node tests/release/lib/verdaccioServer.mjs <config.yaml>
 *
 * The release test starts it as a child process so that stopping the registry is one kill, and
 * listens on port 0 here (Verdaccio's `--listen` would need a port chosen in advance, which
 * another process could take in between).
 */
import { runServer } from 'verdaccio';

const configPath = process.argv[2];
if (!configPath) {
  process.stderr.write(
    'usage: verdaccioServer.mjs <config.yaml>: expected the path of a Verdaccio config file, found none.\n',
  );
  process.exit(2);
}

const server = await runServer(configPath);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => {
  server.close();
  // Open keep-alive sockets of npm clients would hold close() open; the test is done with them.
  server.closeAllConnections?.();
  process.exit(0);
};
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, stop);
// Started with an IPC channel: when the test process goes away, even killed, the channel closes
// and the registry stops instead of lingering on its port.
process.on('disconnect', stop);
