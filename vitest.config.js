import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["js/test/**/*.test.js"],
    // DOM tests opt in per file with `// @vitest-environment happy-dom`
    environment: "node",
  },
});
