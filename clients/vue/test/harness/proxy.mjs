// A TCP proxy in front of Clarion that the test can shut and open: WebSockets through it fail
// while it is shut (nothing listens on its port), as behind a proxy that blocks them.
import { createServer, connect } from 'node:net'

export async function startProxy(target) {
  const sockets = new Set()
  let server
  let port = 0
  const listen = () =>
    new Promise((resolve) => {
      server = createServer((client) => {
        const upstream = connect(target.port, target.host)
        sockets.add(client)
        sockets.add(upstream)
        client.pipe(upstream).pipe(client)
        const done = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        client.on('error', done).on('close', done)
        upstream.on('error', done).on('close', done)
      })
      server.listen(port, '127.0.0.1', () => {
        port = server.address().port
        resolve()
      })
    })
  await listen()
  return {
    get port() {
      return port
    },
    /** Stops listening and cuts every connection through it. */
    async shut() {
      await new Promise((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
    },
    open: listen,
  }
}
