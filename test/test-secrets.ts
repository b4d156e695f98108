// Test-only credentials of the faked seller-side services; vitest.config.ts binds them and
// the fakes check them. Never used outside the tests.
export const TEST_PERSONA = {
  apiKey: "persona_sandbox_test_0123456789abcdef",
  templateId: "itmpl_test0123456789",
  webhookSecret: "wbhsec_test_0123456789abcdef0123456789",
} as const;
