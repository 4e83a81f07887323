// ESLint for the scripts the pages run in the browser (ui/js: the speech queue, call mode).
// scripts/install.sh dev installs it into node_modules/; scripts/test.sh runs it beside ruff.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["ui/js/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-unused-vars": ["error", { args: "none" }],
    },
  },
];
