// Preloaded (`node --import ./bench/loopback.ts`) into Portkey's gateway by the bench:
// its start-server listens on every interface and has no host option, so a listen()
// without a host is pinned to 127.0.0.1. Nothing else about the gateway changes.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
  const [first, second] = args;
  if (typeof first === "number" && (second === undefined || typeof second === "function")) {
    args.splice(1, second === undefined ? 1 : 0, "127.0.0.1");
  } else if (first !== null && typeof first === "object" && !("host" in first) && !("path" in first) && !("fd" in first) && !("_handle" in first)) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return (listen as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof listen;
