import { type ChannelCredentials, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  createTokenInterceptor,
  DataType,
  PeerServiceClient,
  RingPhase,
} from '@shardline/protocol';

/**
 * A Ring call with `token` that sends a chunk before any hello: an endpoint that lets the call
 * through TLS and the token check refuses it with INVALID_ARGUMENT at once (touching no ring),
 * so that status means "got in"; a refused TLS handshake is UNAVAILABLE.
 */
export function ringCall(
  address: string,
  token: string,
  creds: ChannelCredentials = credentials.createInsecure(),
): Promise<ServiceError> {
  const client = new PeerServiceClient(address, creds, {
    ...CHANNEL_OPTIONS,
    interceptors: [createTokenInterceptor(token)],
  });
  return new Promise<ServiceError>((resolve, reject) => {
    const call = client.ring(new Metadata(), { deadline: Date.now() + 10_000 }, (error) => {
      client.close();
      if (error) resolve(error);
      else reject(new Error(`the call to ${address} succeeded`));
    });
    call.on('error', () => {});
    const data = Buffer.alloc(16);
    call.write({
      kind: {
        $case: 'chunk',
        value: {
          step: 0n,
          phase: RingPhase.REDUCE_SCATTER,
          round: 0,
          segment: 0,
          chunk: 0,
          offset: 0n,
          count: 4,
          samples: 1n,
          dtype: DataType.FLOAT32,
          data,
          crc32: 0,
        },
      },
    });
    call.end();
  });
}
