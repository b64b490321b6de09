// The official JS client (npm chromadb@3) with a token through the proxy, checked on the primary.
//
// usage: node auth_client.cjs PROXY_URL PRIMARY_URL READ_TOKEN WRITE_TOKEN
// Prints one JSON line; any failed check throws (non-zero exit).
const assert = require("node:assert/strict");
const { ChromaClient, ChromaForbiddenError, ChromaUnauthorizedError } = require("chromadb");

const [proxyUrl, primaryUrl, readToken, writeToken] = process.argv.slice(2);

function client(url, headers) {
  const { hostname, port } = new URL(url);
  return new ChromaClient({ host: hostname, port: Number(port), headers });
}

async function rejects(errorClass, what, action) {
  try {
    await action();
  } catch (e) {
    assert.ok(e instanceof errorClass, `${what}: ${e}`);
    return;
  }
  throw new Error(`${what}: expected ${errorClass.name}`);
}

(async () => {
  const primary = client(primaryUrl, {});
  for (const [header, value] of [
    ["Authorization", `Bearer ${writeToken}`],
    ["X-Chroma-Token", writeToken],
  ]) {
    const name = `js-${header.toLowerCase()}`;
    const writer = client(proxyUrl, { [header]: value });
    const identity = await writer.getUserIdentity();
    assert.equal(identity.user_id, "writer");
    const col = await writer.createCollection({ name, embeddingFunction: null });
    await col.add({
      ids: ["a", "b", "c"],
      embeddings: [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
      documents: ["doc a", "doc b", "doc c"],
    });
    const hits = await col.query({ queryEmbeddings: [[0, 1, 0]], nResults: 1 });
    assert.deepEqual(hits.ids, [["b"]]);
    assert.equal(await col.count(), 3);
    const direct = await primary.getCollection({ name, embeddingFunction: null });
    assert.equal(await direct.count(), 3, `${header}: the primary holds the records`);
  }
  await rejects(ChromaUnauthorizedError, "no token", () =>
    client(proxyUrl, {}).listCollections());
  const reader = client(proxyUrl, { "X-Chroma-Token": readToken });
  const col = await reader.getCollection({ name: "js-authorization", embeddingFunction: null });
  assert.equal(await col.count(), 3);
  await rejects(ChromaForbiddenError, "read add", () =>
    col.add({ ids: ["x"], embeddings: [[1, 1, 1]], documents: ["x"] }));
  const direct = await primary.getCollection({ name: "js-authorization", embeddingFunction: null });
  assert.equal(await direct.count(), 3, "the refused add reached nothing");
  console.log(JSON.stringify({ ok: true }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
