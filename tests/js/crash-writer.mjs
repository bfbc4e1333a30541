// A JS automerge-repo client that keeps writing to one document while the test kills and restarts
// the server. It prints `ACK <heads>` whenever the heads the server reported change (what the server
// has acknowledged), and after `FINISH` on stdin stops writing and prints `STATE <json>` lines
// ({heads, doc}) until stdin closes.
//
// usage: node crash-writer.mjs ws://127.0.0.1:PORT automerge:DOCID
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import readline from "node:readline"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const [url, docUrl] = process.argv.slice(2)
if (!url || !docUrl) {
  console.error("usage: node crash-writer.mjs ws://HOST:PORT automerge:DOCID")
  process.exit(2)
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "crash-writer-"))
const repo = new Repo({
  network: [new WebSocketClientAdapter(url, 200)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `crash-js-${Math.random().toString(36).slice(2, 10)}`,
})
const handle = await repo.find(docUrl)
console.log("READY")

let writing = true
let storageId
let lastAck = ""
let ticks = 0
const sorted = heads => [...heads].sort()
setInterval(() => {
  if (writing) handle.change(d => { d.js = (d.js ?? 0) + 1 })
  if (!storageId && repo.peers[0]) storageId = repo.getStorageIdOfPeer(repo.peers[0])
  const last = storageId && handle.getSyncInfo(storageId)?.lastHeads
  if (last) {
    const line = sorted(last).join(",")
    if (line !== lastAck) {
      lastAck = line
      console.log(`ACK ${line}`)
    }
  }
  if (!writing && ++ticks % 8 === 0) console.log(`STATE ${JSON.stringify({ heads: sorted(handle.heads()), doc: handle.doc() })}`)
}, 25)

const rl = readline.createInterface({ input: process.stdin })
rl.on("line", line => { if (line.trim() === "FINISH") writing = false })
rl.on("close", async () => {
  await repo.shutdown()
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(0)
})
