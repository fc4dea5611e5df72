// Drives the auditor console in the system's headless Chromium (playwright-core, no downloaded browser):
// logs in with the token, opens each page, saves a screenshot of each, and prints what the pages show as JSON.
// Usage: node console_browser.mjs BASE_URL TOKEN CHROMIUM_PATH SCREENSHOT_DIR [PRINCIPAL]
import { chromium } from "playwright-core";

const [base, token, executablePath, shots, principal = ""] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const denied = await page.goto(`${base}/`);
  const result = { deniedStatus: denied.status() };
  await page.goto(`${base}/login?token=${encodeURIComponent(token)}`);
  result.title = await page.title();
  result.services = await page.$$eval("#services tr", (rows) =>
    rows.slice(1).map((r) => Array.from(r.querySelectorAll("td"), (td) => td.textContent)));
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  await page.goto(`${base}/audit`);
  await page.fill("input[name=principal]", principal);
  await Promise.all([page.waitForNavigation(), page.click("button")]);
  result.count = await page.textContent("#count");
  result.entries = await page.$$eval("#entries tr", (rows) =>
    rows.slice(1).map((r) => Array.from(r.querySelectorAll("td"), (td) => td.textContent)));
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
