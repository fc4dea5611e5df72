// Drives the auditor console in the system's headless Chromium (playwright-core, no downloaded browser): logs
// in with the token, opens every page, saves a screenshot of each, and prints each page's tables as JSON.
// Usage: node console_pages.mjs BASE_URL TOKEN CHROMIUM_PATH SCREENSHOT_DIR PATH...
import { chromium } from "playwright-core";

const [base, token, executablePath, shots, ...paths] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/login?token=${encodeURIComponent(token)}`);
  const result = {};
  for (const path of paths) {
    const reply = await page.goto(`${base}${path}`);
    const tables = await page.$$eval("table", (all) => all.map((t) => ({
      id: t.id || t.dataset.method || "",
      rows: Array.from(t.querySelectorAll("tr")).slice(1).map(
        (r) => Array.from(r.querySelectorAll("td"), (td) => td.textContent)),
    })));
    const errors = await page.$$eval("p.error", (all) => all.map((p) => p.textContent));
    const chart = await page.$$eval("svg#spending polyline", (all) => all.length);
    result[path] = { status: reply.status(), title: await page.title(), tables, errors, chart };
    const name = path.replace(/^\//, "").replace(/[^a-z0-9]+/gi, "-") || "overview";
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  }
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
