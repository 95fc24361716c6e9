// Drives dapi's web console in headless Chromium (playwright-core, Debian's /usr/bin/chromium)
// for tests/integration/test_console.py:
//
//   node console.mjs BASE_URL KEY OUT_DIR SCOPED_KEY LIMITED_KEY
//
// KEY reads every layer; SCOPED_KEY only nekt_raw; LIMITED_KEY may make one request a minute.
// Runs every scenario of issue 13 against a live server over the sample lake, saves
// screenshots and the downloaded CSV under OUT_DIR, and prints one JSON line: {"steps": [...],
// "failures": [...], "requests": [...], "console": [...], "page_errors": [...], "axe": [...]}.
// The Python test judges the requests (one origin), the console messages and the CSV; the
// failures are the checks made here. Exit 0 when the run could be made (even with failures).
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [base, key, out, scopedKey, limitedKey] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
mkdirSync(out, { recursive: true });

const report = { steps: [], failures: [], requests: [], console: [], page_errors: [], axe: [], csv: null };
const fail = (msg) => report.failures.push(msg);
const check = (cond, msg) => { if (!cond) fail(msg); };
const T = 15000; // the longest wait of one step

async function api(p) {
  const r = await fetch(base + p, { headers: { "x-api-key": key } });
  return { status: r.status, body: await r.json() };
}

const browser = await chromium.launch({
  executablePath: process.env.DAPI_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(T);
context.on("request", (r) => report.requests.push(r.url()));
page.on("console", (m) => {
  if (m.type() === "error" || m.type() === "warning") report.console.push({ type: m.type(), text: m.text(), url: m.location().url });
});
page.on("pageerror", (e) => report.page_errors.push(String(e)));

// axe-core on the page as it is now: its violations, named by the state they were seen in
async function axe(state) {
  if (!(await page.evaluate(() => !!window.axe))) await page.evaluate(axeSource);
  const res = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  for (const v of res.violations)
    report.axe.push({ state, id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) });
}
async function shot(name) {
  await page.screenshot({ path: path.join(out, name + ".png"), fullPage: true });
}
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    fail(name + ": " + (e && e.message ? e.message.split("\n")[0] : String(e)));
    try { await shot("failed-" + name); } catch (e2) { /* the page is gone */ }
  }
  report.steps.push({ name, ms: Date.now() - t0 });
}
const text = (sel) => page.locator(sel).innerText();
async function waitText(sel, re, what) {
  await page.waitForFunction(([s, src]) => {
    const e = document.querySelector(s);
    return e && !e.hidden && new RegExp(src).test(e.innerText);
  }, [sel, re.source], { timeout: T }).catch(async () => {
    throw new Error(what + ": " + sel + " never matched " + re + " (it says " + JSON.stringify(await text(sel).catch(() => "?")) + ")");
  });
}
async function setSql(sql) {
  await page.locator("#sql").fill(sql);
}
async function runAndWait(re) {
  await page.locator("#run").click();
  await waitText("#run-state", re || /Succeeded/, "run");
}

await step("load", async () => {
  const resp = await page.goto(base + "/", { waitUntil: "load" });
  check(resp.status() === 200, "GET / answered " + resp.status());
  check((await page.title()) === "dapi console", "title is " + (await page.title()));
  check((await text("#key-state")) === "No key yet", "key state without a key");
  await shot("01-load");
});

await step("wrong-key-401", async () => {
  await page.locator("#key").fill("not-a-key");
  await page.locator("#key-use").click();
  await waitText("#key-error", /refused the API key: Invalid API key/, "401");
  const t = await text("#key-error");
  check(/dapi keys add/.test(t), "the 401 message says where a key comes from: " + t);
  await shot("02-key-refused");
  await axe("key refused");
});

await step("key-and-browse", async () => {
  await page.locator("#key").fill(key);
  await page.locator("#key-use").click();
  await page.locator('button.table-link[data-layer="nekt_raw"][data-table="customers"]').waitFor({ timeout: T });
  check(await page.locator("#key-error").isHidden(), "the 401 message stays after a good key");
  const stored = await page.evaluate(() => [sessionStorage.getItem("dapi.key"), localStorage.getItem("dapi.key"), document.cookie]);
  check(stored[0] === key && stored[1] === null && stored[2] === "", "the key is in sessionStorage only: " + JSON.stringify(stored));
  await page.locator('button.table-link[data-layer="nekt_raw"][data-table="customers"]').click();
  await waitText("#columns-table", /customer_id\s+BIGINT/, "columns of customers");
  await waitText("#table-info-meta", /100000 rows/, "row count");
  const sql = await page.locator("#sql").inputValue();
  check(sql === 'SELECT * FROM "nekt_raw"."customers" LIMIT 100', "the editor has " + JSON.stringify(sql));
  check((await page.locator("#f-layer").inputValue()) === "nekt_raw", "the table form has the layer");
  await shot("03-browse");
});

await step("run-table-query", async () => {
  await runAndWait();
  await waitText("#result-summary", /^100 rows in 1 page/, "summary");
  const heads = await page.locator("#rows thead th").allInnerTexts();
  check(heads.length === 10 && /customer_id\s+BIGINT/.test(heads[0]), "column heads with types: " + JSON.stringify(heads.slice(0, 2)));
  check((await page.locator("#rows tbody tr").count()) === 100, "100 rows shown");
  const cls = await page.locator("#rows tbody tr:first-child td:first-child").getAttribute("class");
  check(cls === "num", "a number is right-aligned (class " + cls + ")");
  await shot("04-result");
});

await step("reference-form", async () => {
  await page.locator("details.by-table > summary").click();
  await page.locator("#f-limit").fill("7");
  await page.locator("#f-run").click();
  await waitText("#result-summary", /^7 rows in 1 page/, "layer+table+limit run");
});

const PAGED = "SELECT customer_id, name, country FROM nekt_raw.customers ORDER BY customer_id LIMIT 250";
let pagedSlug = null;
await step("page-forward-back", async () => {
  await setSql(PAGED);
  await runAndWait();
  await waitText("#result-summary", /^250 rows in 3 pages/, "summary of 250 rows");
  pagedSlug = (await text("#result-summary")).match(/dapi-query-\w+/)[0];
  const first = async () => page.locator("#rows tbody tr:first-child td:first-child").innerText();
  const rows = async () => page.locator("#rows tbody tr").count();
  const p2 = (await api("/api/queries/" + pagedSlug + "/results?page_number=2")).body.data[0].customer_id;
  await page.locator("#p-next").click();
  await waitText("#p-where", /^Page 2 of 3$/, "next");
  check((await first()) === String(p2), "page 2 starts with the API's row " + p2 + ", not " + (await first()));
  await page.locator("#p-last").click();
  await waitText("#p-where", /^Page 3 of 3$/, "last");
  check((await rows()) === 50, "the last page has 50 rows");
  check(await page.locator("#p-next").isDisabled(), "Next is disabled on the last page");
  await page.locator("#p-prev").click();
  await waitText("#p-where", /^Page 2 of 3$/, "previous");
  await page.locator("#p-first").click();
  await waitText("#p-where", /^Page 1 of 3$/, "first");
  check((await rows()) === 100, "page 1 has 100 rows");
  check(await page.locator("#p-prev").isDisabled(), "Previous is disabled on page 1");
});

await step("download-csv", async () => {
  const [dl] = await Promise.all([page.waitForEvent("download", { timeout: T }), page.locator('.downloads button[data-format="csv"]').click()]);
  const file = path.join(out, "download.csv");
  await dl.saveAs(file);
  check(dl.suggestedFilename() === pagedSlug + ".csv", "download name " + dl.suggestedFilename());
  report.csv = { file, slug: pagedSlug };
  await waitText("#dl-state", /^Downloaded /, "download state");
});

await step("values", async () => {
  await setSql("SELECT NULL AS n, '' AS e, 'x' AS s, repeat('long ', 40) AS l, 12.50::DECIMAL(5,2) AS d, 9007199254740993 AS big");
  await runAndWait();
  const cells = page.locator("#rows tbody tr:first-child td");
  check((await cells.nth(0).locator("span.null").innerText()) === "NULL", "NULL shown as NULL");
  check((await cells.nth(1).locator("span.empty").count()) === 1, "the empty string shown as empty");
  check((await cells.nth(2).innerText()) === "x", "a short string as it is");
  const cut = cells.nth(3).locator("button.cut");
  check((await cut.getAttribute("title")) === "long ".repeat(40), "the full long value on hover");
  await cut.click();
  check((await cut.getAttribute("aria-expanded")) === "true" && (await cut.innerText()).startsWith("long ".repeat(40).trim()), "click shows the whole value");
  check((await cells.nth(4).innerText()) === "12.50" && (await cells.nth(4).getAttribute("class")) === "num", "a decimal as sent, right-aligned");
  check((await cells.nth(5).innerText()) === "9007199254740993", "a big integer exactly: " + (await cells.nth(5).innerText()));
  await shot("05-values");
  await setSql("SELECT 1 AS a WHERE false");
  await runAndWait();
  await waitText("#result-summary", /^No rows · /, "an empty result");
  check((await page.locator("#rows thead th").allInnerTexts()).join("|").replace(/\s+/g, " ") === "a INTEGER", "an empty result has its columns");
});

await step("sql-error-with-position", async () => {
  await setSql("SELECT 1,\n  2 FORM x");
  await page.locator("#run").click();
  await waitText("#error", /The SQL was refused/, "SQL error");
  const t = await text("#error");
  check(/At line 2, column 10 of the SQL/.test(t), "the error names its position: " + t);
  check(/syntax error at or near "x"/.test(t), "the error has DuckDB's words: " + t);
  const sel = await page.locator("#sql").evaluate((e) => e.selectionStart);
  check(sel === 19, "the editor's cursor is put at the error (at " + sel + ")");
  await shot("06-sql-error");
  await axe("SQL error");
});

async function useKey(k) {
  await page.locator("#key").fill(k);
  await page.locator("#key-use").click();
}

await step("scope-403", async () => {
  await useKey(scopedKey);
  check(await page.locator("#result").isHidden(), "another key's result is not left on screen");
  await page.waitForFunction(() => {
    const names = [...document.querySelectorAll(".layer-name")].map((e) => e.textContent);
    return names.length === 1 && names[0] === "nekt_raw";
  }, null, { timeout: T });
  await setSql("SELECT count(*) FROM nekt_trusted.customers");
  await page.locator("#run").click();
  await waitText("#error", /This key may not read that\./, "403");
  check(/may not read layer 'nekt_trusted'/.test(await text("#error")), "the 403 names the layer: " + (await text("#error")));
  await shot("11-forbidden");
});

await step("rate-limit-429", async () => {
  await useKey(limitedKey); // its one request: the tables list
  await page.locator("button.table-link").first().waitFor({ timeout: T });
  await setSql("SELECT 1");
  await page.locator("#run").click();
  await waitText("#error", /Too many requests for this key\.\s+Wait \d+ s and try again \(at most 1 requests per minute/, "429");
  await shot("12-rate-limited");
  await useKey(key);
  await page.locator('button.table-link[data-layer="nekt_trusted"]').first().waitFor({ timeout: T });
});

await step("cancel-slow-query", async () => {
  await setSql("SELECT count(*) AS n FROM range(1000000000000)");
  await page.locator("#run").click();
  await waitText("#run-state", /^Running/, "running");
  await page.waitForTimeout(600);
  check(/^Running · \d/.test(await text("#run-state")), "state and elapsed time: " + (await text("#run-state")));
  await shot("07-running");
  check(await page.locator("#cancel").isEnabled(), "Cancel is enabled while it runs");
  await page.locator("#cancel").click();
  await waitText("#run-state", /^Cancelled after/, "cancelled");
  await waitText("#error", /cancelled by its owner/, "cancel message");
});

await step("chart", async () => {
  await setSql("SELECT country, count(*) AS customers, count(*) FILTER (WHERE is_active) AS active FROM nekt_raw.customers GROUP BY 1 ORDER BY 1");
  await runAndWait();
  await page.locator("#chart-box > summary").click();
  check((await page.locator("#c-label").inputValue()) === "0", "the label column is the text column");
  check((await page.locator("#c-values input:checked").count()) === 2, "both numeric columns are chosen");
  await page.locator("#c-draw").click();
  await page.locator("#chart svg").waitFor({ timeout: T });
  const bars = await page.locator("#chart svg rect").count();
  const groups = (await page.locator("#rows tbody tr").count());
  check(bars === 2 * groups + 2, "bars: " + bars + " for " + groups + " rows and 2 series (+2 legend)");
  await page.locator("#c-kind").selectOption("line");
  await page.locator("#c-draw").click();
  check((await page.locator("#chart svg polyline").count()) === 2, "a line per series");
  await shot("08-chart");
});

await step("history-rerun", async () => {
  const items = page.locator("#history li");
  check((await items.count()) >= 5, "history holds the queries run: " + (await items.count()));
  const entry = items.filter({ hasText: PAGED });
  check((await entry.count()) === 1, "the paged query is in the history once");
  await entry.locator("button.again").click();
  await waitText("#run-state", /Succeeded/, "re-run from history");
  await waitText("#result-summary", /^250 rows in 3 pages/, "re-run result");
  check((await page.locator("#sql").inputValue()) === PAGED, "the editor has the re-run query");
});

await step("keyboard-only", async () => {
  await page.reload({ waitUntil: "load" });
  check((await page.locator("#sql").inputValue()) === PAGED, "the SQL is kept across a reload");
  check((await text("#key-state")) === "Key set for this tab", "the key is kept in the tab");
  await page.locator("body").focus();
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement.className)) === "skip", "the first Tab reaches the skip link");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "sql", null, { timeout: 3000 });
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.type("SELECT 7 AS seven");
  await page.keyboard.press("Control+Enter");
  await waitText("#result-summary", /^1 row in 1 page/, "Ctrl+Enter run");
  // Tab on from the editor to the Run button, and Enter
  await page.locator("#sql").focus();
  let guard = 0;
  while ((await page.evaluate(() => document.activeElement.id)) !== "run" && guard++ < 10) await page.keyboard.press("Tab");
  check(guard < 10, "Tab reaches Run");
  await page.keyboard.press("Enter");
  await waitText("#run-state", /Succeeded/, "Enter on Run");
  await shot("09-keyboard");
});

await step("endpoint-call", async () => {
  // the server's --endpoints-file has customers_by_country (country: ^[A-Z]{2}$, limit 1..1000)
  const link = page.locator('button.endpoint-link[data-endpoint="customers_by_country"]');
  await link.waitFor({ timeout: T });
  await link.click();
  check(/pattern \^\[A-Z\]\{2\}\$/.test(await text("#endpoint-params")), "the parameter's rules are shown");
  await page.locator("#ep-country").fill("US");
  await page.locator("#ep-limit").fill("3");
  await page.locator("#endpoint-call").click();
  await waitText("#run-state", /Succeeded/, "endpoint call");
  await waitText("#result-summary", /^3 rows in 1 page/, "the endpoint's result");
  const want = await api("/api/endpoints/customers_by_country?country=US&limit=3");
  const got = await page.locator("#rows tbody tr:first-child td").allInnerTexts();
  const first = want.body.data[0];
  check(want.status === 200 && got[0] === String(first.customer_id) && got[1] === first.name,
        "the first row is the API's: " + JSON.stringify([got.slice(0, 2), first]));
  await shot("13-endpoint");
  // a value breaking a rule: the 400 names the parameter and the rule
  await page.locator("#ep-country").fill("usa");
  await page.locator("#endpoint-call").click();
  await waitText("#error", /country.*pattern/, "the refused value");
  await axe("endpoint form and its error");
});

await step("narrow-400px", async () => {
  await page.setViewportSize({ width: 400, height: 900 });
  await page.waitForTimeout(100);
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  check(w <= 400, "the page is " + w + " px wide at 400 px");
  check(await page.locator("#run").isVisible(), "Run is visible at 400 px");
  await shot("10-narrow");
  await page.setViewportSize({ width: 1280, height: 900 });
});

await step("axe", async () => {
  // with a result, an open chart and table info on screen: the most there is to check
  await page.locator("#chart-box > summary").click();
  await axe("result, chart and history");
  await page.setViewportSize({ width: 400, height: 900 });
  await axe("400 px wide");
  await page.setViewportSize({ width: 1280, height: 900 });
});

await step("forget-key", async () => {
  await page.locator("#key-forget").click();
  check((await page.evaluate(() => sessionStorage.getItem("dapi.key"))) === null, "Forget drops the key from sessionStorage");
  check((await text("#key-state")) === "No key yet" && (await page.locator("#key").inputValue()) === "", "Forget empties the field");
  check(await page.locator("#result").isHidden(), "Forget hides the result");
});

await browser.close();
console.log(JSON.stringify(report));
