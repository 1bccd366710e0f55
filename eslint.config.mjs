// ESLint for the web UI: plain ES modules served as they are (services/gateway/.../static).
import js from "@eslint/js";

const browser = Object.fromEntries(
  ["window", "document", "location", "localStorage", "fetch", "EventSource", "Intl", "Node", "URLSearchParams",
   "FormData", "confirm", "prompt", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "performance",
   "DocumentFragment", "console", "Blob", "URL", "navigator", "requestAnimationFrame", "AbortController",
   "XMLHttpRequest", "BroadcastChannel"]
    .map((name) => [name, "readonly"]));

export default [
  js.configs.recommended,
  {
    files: ["services/gateway/src/cinebridge_gateway/static/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: browser },
    rules: {
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
      "prefer-const": "error",
      "no-var": "error",
      // `const { a, ...rest } = x` leaves `a` out of `rest` on purpose.
      "no-unused-vars": ["error", { args: "none", ignoreRestSiblings: true }],
    },
  },
  {
    // Swagger UI's bundle (served from the package, api_docs.py) defines its global first.
    files: ["services/gateway/src/cinebridge_gateway/static/api-docs.js"],
    languageOptions: { globals: { SwaggerUIBundle: "readonly" } },
  },
];
