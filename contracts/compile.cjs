// Compiles contracts/src with the pinned solc-js from node_modules, through its JavaScript compile() API rather
// than the solcjs CLI (whose stdout carries a ">>>" banner and is cut at 64 KiB when the process exits).
// Usage: node contracts/compile.cjs OUT_DIR
// Writes OUT_DIR/<Contract>.json for each contract defined in contracts/src (ABI, bytecode, deployed bytecode,
// compiler metadata, source hashes) and OUT_DIR/standard-input.json, the exact input compiled.
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const srcDir = path.join(__dirname, "src");
const settings = JSON.parse(fs.readFileSync(path.join(__dirname, "compiler.json"), "utf8"));

function listSources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return listSources(full);
    return entry.name.endsWith(".sol") ? [full] : [];
  }).sort();
}

function sourceName(file) {
  return path.relative(root, file).split(path.sep).join("/");
}

// Resolves imports the way the sources write them: relative to the importing file, or a package in node_modules.
function resolveImport(importPath) {
  const candidates = [path.join(root, importPath), path.join(root, "node_modules", importPath)];
  for (const file of candidates) {
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

function main() {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error("usage: node contracts/compile.cjs OUT_DIR");
    process.exit(2);
  }
  if (solc.version().split("+")[0] !== settings.solcVersion) {
    console.error(`solc-js is ${solc.version()}, contracts/compiler.json pins ${settings.solcVersion}: run npm ci`);
    process.exit(2);
  }
  const sources = {};
  for (const file of listSources(srcDir)) {
    sources[sourceName(file)] = { content: fs.readFileSync(file, "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...settings.settings,
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata", "storageLayout"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: resolveImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const message of output.errors || []) console.error(message.formattedMessage.trim());
  if (errors.length) process.exit(1);

  fs.mkdirSync(outDir, { recursive: true });
  // Keep imported library sources (OpenZeppelin) in the recorded input so that the build can be replayed.
  const fullInput = { ...input, sources: {} };
  for (const name of Object.keys(output.sources).sort()) {
    fullInput.sources[name] = sources[name] || { content: resolveImport(name).contents };
  }
  fs.writeFileSync(path.join(outDir, "standard-input.json"), JSON.stringify(fullInput, null, 1) + "\n");
  for (const name of Object.keys(sources)) {
    for (const [contractName, contract] of Object.entries(output.contracts[name] || {})) {
      if (!contract.evm.bytecode.object) continue; // interfaces, free constants
      const artifact = {
        contractName,
        sourceName: name,
        compiler: { name: "solc", version: solc.version(), settings: settings.settings },
        sourceHash: "0x" + crypto.createHash("sha256").update(sources[name].content).digest("hex"),
        abi: contract.abi,
        bytecode: "0x" + contract.evm.bytecode.object,
        deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
        metadata: contract.metadata,
        storageLayout: contract.storageLayout,
      };
      fs.writeFileSync(path.join(outDir, `${contractName}.json`), JSON.stringify(artifact, null, 1) + "\n");
    }
  }
}

main();
