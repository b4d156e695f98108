// Stand-in for `@modelcontextprotocol/sdk/types.js`, which mppx imports lazily on its MCP
// paths (never used here: cn2 speaks MPP over HTTP only). wrangler.toml aliases the
// module to this file so the bundler does not need the MCP SDK installed.
export class McpError extends Error {
  readonly code: number;
  readonly data: unknown;
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.name = "McpError";
    this.code = code;
    this.data = data;
  }
}
