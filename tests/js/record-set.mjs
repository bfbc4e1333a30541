// Edits a record document the way an app does, for the bridge tests:
//
//   node tests/js/record-set.mjs ws://HOST:PORT automerge:ID '{"organization": "Acme"}'
//
// finds the document, assigns each given top-level atomic field (`d.field = "value"`: a JS string
// assignment writes a new Text object, the contract's atomic write), waits until the server has
// acknowledged the change, and prints the document as JSON on stdout. With no JSON it only reads.
// Exit code 0 only on success; diagnostics go to stderr.

import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"

const STEP_MS = 15_000
const [url, docUrl, fieldsJson] = process.argv.slice(2)
if (!url || !docUrl) {
  console.error("usage: node record-set.mjs ws://HOST:PORT automerge:ID ['{\"field\": \"value\"}']")
  process.exit(2)
}
const fields = fieldsJson ? JSON.parse(fieldsJson) : {}

const sleep = ms => new Promise(r => setTimeout(r, ms))
async function waitFor(what, pred) {
  const deadline = Date.now() + STEP_MS
  for (;;) {
    const v = await pred()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timeout after ${STEP_MS} ms: ${what}`)
    await sleep(20)
  }
}
const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

// Storage gives the repo a storageId, which is what makes it track the server's heads.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "record-set-"))
const repo = new Repo({
  network: [new WebSocketClientAdapter(url, 500)],
  storage: new NodeFSStorageAdapter(dir),
})
try {
  await waitFor("connected to the server", () => repo.peers[0])
  const handle = await repo.find(docUrl)
  if (Object.keys(fields).length) {
    handle.change(d => {
      for (const [k, v] of Object.entries(fields)) d[k] = v
    })
    const sid = await waitFor("the server advertised a storageId", () => repo.getStorageIdOfPeer(repo.peers[0]))
    await waitFor("the server acknowledged the change", () => {
      const last = handle.getSyncInfo(sid)?.lastHeads
      return last && sameSet(last, handle.heads())
    })
  }
  console.log(JSON.stringify(handle.doc()))
} finally {
  await repo.shutdown()
  fs.rmSync(dir, { recursive: true, force: true })
}
process.exit(0)
