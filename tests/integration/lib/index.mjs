// The integration-test harness in one import.
export { makeCA, issueCert } from './pki.mjs';
export { mintJwt, decodeJwt, DEFAULT_TENANT, STORAGE_AUDIENCE } from './jwt.mjs';
export { freePort, waitForPort, RawConnection } from './net.mjs';
export { spawnProcess, rssPeakOfPid } from './proc.mjs';
export { generatedStream, sha256OfStream, hashingPassThrough, sha256Hex } from './hash.mjs';
export { startTlsServer, upstreamHandler } from './tls-server.mjs';
export { startAzurite, azuriteArgs, AZURITE_ACCOUNT, AZURITE_BLOB_MAIN } from './azurite.mjs';
export { MIPROXY_BIN, BINARY_PROBLEM, SANITIZED_BUILD, MEMORY_FACTOR, requireBinary, startMiproxy, runMiproxy } from './miproxy.mjs';
export { httpRequest, miproxyError } from './client.mjs';
export { makeFixture, proxyConfig } from './fixture.mjs';
export { testLogDir, recordSecret, processLog, recordOutput, SECRETS_FILE } from './testlog.mjs';
