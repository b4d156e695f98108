// Live seller dashboards for the bench (issue 11): WebSockets to the seller's room, opened
// the way a browser on the dashboard opens them (the seller's session, our own Origin), and
// read like the page reads them. The `cn2-dashboards` run keeps five of these open on the
// serving keys' seller while the proxy is under load: what the key objects' live pushes cost.
export interface Dashboards {
  /** Messages the sockets received (snapshots included): proof they were live. */
  messages(): number;
  close(): Promise<void>;
}

export async function openDashboards(baseUrl: string, seller: { id: string; token: string }, count: number): Promise<Dashboards> {
  let received = 0;
  const url = `${baseUrl.replace(/^http/, "ws")}/api/live/${seller.id}`;
  const sockets = await Promise.all(
    Array.from({ length: count }, () => new Promise<WebSocket>((resolve, reject) => {
      // Node's WebSocket (undici) takes headers: the cookie and Origin a browser would send.
      const ws = new WebSocket(url, { headers: { cookie: `__Host-cn2_session=${seller.token}`, origin: baseUrl } } as unknown as string[]);
      ws.addEventListener("message", () => void received++);
      ws.addEventListener("open", () => resolve(ws));
      ws.addEventListener("error", () => reject(new Error(`bench: a dashboard socket to ${url} was refused`)));
    })),
  );
  return {
    messages: () => received,
    async close() {
      await Promise.all(sockets.map((ws) => new Promise<void>((done) => {
        if (ws.readyState === WebSocket.CLOSED) return done();
        ws.addEventListener("close", () => done());
        ws.close(1000, "bench done");
      })));
    },
  };
}
