/* libFuzzer driver: dapi_sandbox_check (src/engine/sandbox.h), the SQL sandbox that judges
 * DuckDB's json_serialize_sql parse tree of a user query.
 *
 * Setup: data_dir "/lake"; is_layer accepts "lake1" only (case-insensitively, as the engine's
 * lake_has_layer does); is_catalog_name knows {"duckdb_settings", "duckdb_views"}. The tree is
 * an exact-size copy of the input (not NUL-terminated).
 *
 * Invariants checked on every input:
 *  - the result is DAPI_OK or DAPI_ERR_SQL. DAPI_ERR_NOMEM is allowed by the API but nothing
 *    fails allocation here (libFuzzer crashes on a malloc above -malloc_limit_mb rather than
 *    returning NULL), so a NOMEM would be a refusal misreported;
 *  - *msg is non-NULL exactly for DAPI_ERR_SQL and is valid UTF-8, non-empty, at most MSG_MAX
 *    bytes, and one line (no control characters) unless the tree's strings hold escapes (a
 *    name quoted in the message may hold a newline); sb.paths is NULL/0 after a refusal;
 *  - the callbacks get a NUL-terminated name, the arg given, and is_catalog_name lower case;
 *  - on DAPI_OK every path returned lies under "/lake/" with no backslash and no component
 *    starting with '.' (checked here, and by dapi_sandbox_path_problem);
 *  - on DAPI_OK an independent reference walk of the same tree (jansson directly, strings
 *    compared over their full length, so "\u0000" inside a name counts) finds nothing
 *    forbidden. It is deliberately simpler than the sandbox; the sandbox may be stricter:
 *      * an object with "class" "FUNCTION" or "WINDOW" whose lower-cased function_name is not
 *        in dapi_allow_scalar (for the "function" of a TABLE_FUNCTION reference: not in
 *        dapi_allow_lake_table or dapi_allow_pure_table);
 *      * an object with "class" "PARAMETER";
 *      * a table reference (an object with no string "class") of type SHOW_REF;
 *      * a BASE_TABLE with a non-empty schema_name other than "lake1" (case-insensitive), a
 *        catalog_name other than "" or "memory", or, unqualified, a table_name that is a
 *        catalog name or is not the key of any CTE in the document;
 *      * a lake table function (read_parquet, …) whose first argument is not a string
 *        constant or a function of string constants, or one of whose strings is not returned,
 *        byte for byte, in sb.paths;
 *    A hit is a bypass: abort().
 *  - a second call on the same tree gives the same result and the same paths;
 *  - no crash, leak or out-of-bounds read (ASan/UBSan), whatever the JSON; the check runs on
 *    a thread with a 1 MB stack (CHECK_STACK) so that unbounded recursion shows up. */
#include <jansson.h>
#include <pthread.h>
#include <strings.h>

#include "engine/allowlist.h"
#include "engine/sandbox.h"
#include "fuzz_common.h"

#define DATA_DIR "/lake"
#define MSG_MAX 4096
#define REF_DEPTH_CAP 5000 /* the sandbox parses at most 4000 deep; deeper is never accepted */
/* The check runs on a thread with this stack. In the server it runs on a pool thread (8 MB),
 * on trees of megabytes (DuckDB's JSON is ~80 times the SQL); here inputs are at most 64 KB,
 * so the stack is scaled down with them: recursion that grows with the input overflows it
 * (ASan reports stack-overflow) long before it would be bounded by -max_len. */
#define CHECK_STACK (1 << 20)

/* ---- callbacks --------------------------------------------------------------------------- */

struct cb_arg {
    unsigned magic;
    unsigned calls;
};
#define CB_MAGIC 0x5a4db0c5u

static int cb_is_layer(void *arg, const char *name)
{
    struct cb_arg *a = arg;
    FUZZ_CHECK(a && a->magic == CB_MAGIC, "is_layer: wrong arg");
    FUZZ_CHECK(name != NULL, "is_layer: NULL name");
    a->calls++;
    return strcasecmp(name, "lake1") == 0;
}

static int cb_is_catalog_name(void *arg, const char *name)
{
    struct cb_arg *a = arg;
    FUZZ_CHECK(a && a->magic == CB_MAGIC, "is_catalog_name: wrong arg");
    FUZZ_CHECK(name != NULL, "is_catalog_name: NULL name");
    for(const char *p = name; *p; p++)
        FUZZ_CHECK(!(*p >= 'A' && *p <= 'Z'), "is_catalog_name: name not lower case: %s", name);
    a->calls++;
    return strcmp(name, "duckdb_settings") == 0 || strcmp(name, "duckdb_views") == 0;
}

/* ---- name lists -------------------------------------------------------------------------- */

/* The sandbox looks names up with bsearch: the lists must be sorted and without duplicates.
 * Checked once; the reference then uses its own binary search. */
static void check_sorted(const char *const *list, size_t n, const char *what)
{
    for(size_t i = 1; i < n; i++)
        FUZZ_CHECK(strcmp(list[i - 1], list[i]) < 0, "%s is not sorted at \"%s\", \"%s\"", what,
                   list[i - 1], list[i]);
}

/* Is name[0..len) (already lower case; may hold NULs) in the list? */
static int in_list(const char *const *list, size_t n, const char *name, size_t len)
{
    if(memchr(name, '\0', len))
        return 0; /* no listed name holds a NUL */
    size_t lo = 0, hi = n;
    while(lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, list[mid]);
        if(c == 0)
            return 1;
        if(c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

/* ---- the reference walk ------------------------------------------------------------------ */

struct ref {
    json_t *root;
    const struct dapi_sandbox *sb;
    char **ctes; /* lower-cased CTE names (full length, with their lengths) */
    size_t *cte_len;
    size_t nctes, cap;
};

/* A lower-cased (ASCII) copy of a JSON string, or NULL if v is not a string. */
static char *lower_dup(const json_t *v, size_t *len)
{
    if(!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    char *o = malloc(n + 1);
    FUZZ_CHECK(o != NULL, "out of memory in the driver");
    for(size_t i = 0; i < n; i++)
        o[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    o[n] = '\0';
    *len = n;
    return o;
}

/* Is string member key of object o the tag want? Tags ("class", "type") are compared as C
 * strings, as the sandbox reads them: DuckDB's tags never hold a NUL, and reading one the
 * same way keeps the reference from disagreeing about what a node is. Names, on the other
 * hand, are compared over their full length below. */
static int tag_is(const json_t *o, const char *key, const char *want)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

static void collect_cte_names(struct ref *r, const json_t *v, int depth)
{
    if(depth > REF_DEPTH_CAP)
        return;
    if(json_is_array(v)) {
        for(size_t i = 0; i < json_array_size(v); i++)
            collect_cte_names(r, json_array_get(v, i), depth + 1);
        return;
    }
    if(!json_is_object(v))
        return;
    /* Any "key" string inside any "cte_map" counts: generous, so the reference stays lenient
     * about which unqualified names might be CTEs. */
    const json_t *map = json_object_get(json_object_get(v, "cte_map"), "map");
    for(size_t i = 0; i < json_array_size(map); i++) {
        size_t len;
        char *name = lower_dup(json_object_get(json_array_get(map, i), "key"), &len);
        if(!name) /* a key that is not a string reads as "" */
            name = strdup(""), len = 0;
        FUZZ_CHECK(name != NULL, "out of memory in the driver");
        if(r->nctes == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 16;
            r->ctes = realloc(r->ctes, r->cap * sizeof *r->ctes);
            r->cte_len = realloc(r->cte_len, r->cap * sizeof *r->cte_len);
            FUZZ_CHECK(r->ctes && r->cte_len, "out of memory in the driver");
        }
        r->ctes[r->nctes] = name;
        r->cte_len[r->nctes++] = len;
    }
    const char *key;
    json_t *m;
    json_object_foreach((json_t *)v, key, m) collect_cte_names(r, m, depth + 1);
}

static int is_cte_name(const struct ref *r, const char *lname, size_t len)
{
    for(size_t i = 0; i < r->nctes; i++)
        if(r->cte_len[i] == len && memcmp(r->ctes[i], lname, len) == 0)
            return 1;
    return 0;
}

static int path_returned(const struct dapi_sandbox *sb, const char *p, size_t len)
{
    for(size_t i = 0; i < sb->npaths; i++)
        if(strlen(sb->paths[i]) == len && memcmp(sb->paths[i], p, len) == 0)
            return 1;
    return 0;
}

/* A string constant's value (as the sandbox's literal check would want it), or NULL. */
static const json_t *string_constant(const json_t *e)
{
    const json_t *val = json_object_get(json_object_get(e, "value"), "value");
    if(!tag_is(e, "class", "CONSTANT") || !json_is_string(val))
        return NULL;
    return val;
}

/* The first argument of an accepted lake table function: string constants, each returned. */
static void ref_file_args(struct ref *r, const json_t *fn, const char *name)
{
    const json_t *arg = json_array_get(json_object_get(fn, "children"), 0);
    const json_t *s = string_constant(arg);
    FUZZ_CHECK(arg != NULL, "BYPASS: %s() accepted without a file argument", name);
    if(s) {
        FUZZ_CHECK(path_returned(r->sb, json_string_value(s), json_string_length(s)),
                   "BYPASS: %s('%s'): the path was not returned in sb.paths (as read)", name,
                   json_string_value(s));
        return;
    }
    FUZZ_CHECK(tag_is(arg, "class", "FUNCTION"),
               "BYPASS: %s() accepted with a first argument that is no literal nor list", name);
    const json_t *items = json_object_get(arg, "children");
    FUZZ_CHECK(json_array_size(items) > 0, "BYPASS: %s() accepted with an empty list", name);
    for(size_t i = 0; i < json_array_size(items); i++) {
        s = string_constant(json_array_get(items, i));
        FUZZ_CHECK(s != NULL, "BYPASS: %s() accepted with a list item that is not a string", name);
        FUZZ_CHECK(path_returned(r->sb, json_string_value(s), json_string_length(s)),
                   "BYPASS: %s(['%s', …]): the path was not returned in sb.paths (as read)", name,
                   json_string_value(s));
    }
}

/* A function call object (class FUNCTION or WINDOW). table_slot: it is the "function" of a
 * TABLE_FUNCTION reference. */
static void ref_function(struct ref *r, const json_t *fn, int table_slot)
{
    size_t len = 0;
    char *name = lower_dup(json_object_get(fn, "function_name"), &len);
    FUZZ_CHECK(name != NULL, "BYPASS: a function call without a function_name was accepted");
    if(table_slot) {
        int lake = in_list(dapi_allow_lake_table, dapi_allow_lake_table_n, name, len);
        FUZZ_CHECK(lake || in_list(dapi_allow_pure_table, dapi_allow_pure_table_n, name, len),
                   "BYPASS: table function \"%s\" (%zu bytes) accepted, not on the table lists",
                   name, len);
        if(lake)
            ref_file_args(r, fn, name);
    } else {
        FUZZ_CHECK(in_list(dapi_allow_scalar, dapi_allow_scalar_n, name, len),
                   "BYPASS: function \"%s\" (%zu bytes) accepted, not on dapi_allow_scalar", name,
                   len);
    }
    free(name);
}

static void ref_base_table(struct ref *r, const json_t *v)
{
    const json_t *sch = json_object_get(v, "schema_name"),
                 *cat = json_object_get(v, "catalog_name");
    if(json_is_string(cat) && json_string_length(cat) > 0) {
        size_t len;
        char *c = lower_dup(cat, &len);
        int ok = len == 6 && memcmp(c, "memory", 6) == 0;
        FUZZ_CHECK(ok, "BYPASS: table in catalog \"%s\" accepted", c);
        free(c);
    }
    if(json_is_string(sch) && json_string_length(sch) > 0) {
        size_t len;
        char *s = lower_dup(sch, &len);
        FUZZ_CHECK(len == 5 && memcmp(s, "lake1", 5) == 0,
                   "BYPASS: table in schema \"%s\" (%zu bytes) accepted, not a layer", s, len);
        free(s);
        return;
    }
    /* Unqualified (the sandbox reads any non-string as ""): must be a CTE of the query, and
     * not a name of DuckDB's own catalog. A missing or non-string table_name reads as "". */
    size_t len = 0;
    char *t = lower_dup(json_object_get(v, "table_name"), &len);
    if(!t)
        t = strdup(""), len = 0;
    FUZZ_CHECK(t != NULL, "out of memory in the driver");
    FUZZ_CHECK(!in_list((const char *const[]){"duckdb_settings", "duckdb_views"}, 2, t, len),
               "BYPASS: unqualified catalog name \"%s\" accepted", t);
    FUZZ_CHECK(is_cte_name(r, t, len),
               "BYPASS: unqualified table \"%s\" (%zu bytes) accepted, not a CTE name", t, len);
    free(t);
}

static void ref_walk(struct ref *r, const json_t *v, int table_slot, int depth)
{
    FUZZ_CHECK(depth <= REF_DEPTH_CAP, "accepted a tree nested deeper than %d", REF_DEPTH_CAP);
    if(json_is_array(v)) {
        for(size_t i = 0; i < json_array_size(v); i++)
            ref_walk(r, json_array_get(v, i), 0, depth + 1);
        return;
    }
    if(!json_is_object(v))
        return;
    const json_t *cls = json_object_get(v, "class");
    int tf = 0;
    if(json_is_string(cls)) {
        /* An expression. Its class compared as a C string, as anything reading it would. */
        const char *c = json_string_value(cls);
        FUZZ_CHECK(strcmp(c, "PARAMETER") != 0, "BYPASS: a PARAMETER was accepted");
        if(strcmp(c, "FUNCTION") == 0 || strcmp(c, "WINDOW") == 0)
            ref_function(r, v, table_slot);
    } else {
        /* A table reference, query node or anything else. */
        FUZZ_CHECK(!tag_is(v, "type", "SHOW_REF"), "BYPASS: a SHOW_REF was accepted");
        if(tag_is(v, "type", "BASE_TABLE"))
            ref_base_table(r, v);
        tf = tag_is(v, "type", "TABLE_FUNCTION");
    }
    const char *key;
    size_t klen;
    json_t *m;
    json_object_keylen_foreach((json_t *)v, key, klen, m)
    {
        int slot = tf && klen == 8 && memcmp(key, "function", 8) == 0;
        if(slot && !json_is_string(json_object_get(m, "class")))
            FUZZ_CHECK(0, "BYPASS: a TABLE_FUNCTION whose function has no class was accepted");
        ref_walk(r, m, slot, depth + 1);
    }
}

/* Independent of dapi_sandbox_path_problem: under DATA_DIR "/", no backslash, no component
 * that starts with '.'. */
static int ref_path_ok(const char *p)
{
    size_t n = strlen(DATA_DIR);
    if(strncmp(p, DATA_DIR "/", n + 1) != 0 || strchr(p, '\\'))
        return 0;
    for(const char *c = p + n; *c; c++)
        if(c[0] == '/' && c[1] == '.')
            return 0;
    return 1;
}

/* ---- the driver -------------------------------------------------------------------------- */

/* The refusal message. It may quote names and paths from the tree, and JSON strings may hold
 * newlines and other control characters (quoted identifiers in SQL can too), so it is one
 * line only when the tree holds none: when the text has no backslash at all (JSON strings
 * cannot hold raw control characters below 0x20, only escapes). */
static void check_msg(const char *msg, int text_has_escapes)
{
    size_t n = strnlen(msg, MSG_MAX + 1);
    FUZZ_CHECK(n > 0, "refusal with an empty message");
    FUZZ_CHECK(n <= MSG_MAX, "refusal message longer than %d bytes", MSG_MAX);
    FUZZ_CHECK(fz_utf8_valid(msg, n), "refusal message is not valid UTF-8: %s", msg);
    for(size_t i = 0; i < n && !text_has_escapes; i++)
        FUZZ_CHECK((unsigned char)msg[i] >= 0x20, /* DEL may stand raw in a JSON string */
                   "refusal message is not one line (byte 0x%02x at %zu): %s",
                   (unsigned char)msg[i], i, msg);
}

struct call {
    const char *text;
    size_t size;
    struct dapi_sandbox *sb;
    char **msg;
    enum dapi_err r;
};

static void *call_check(void *arg)
{
    struct call *c = arg;
    c->r = dapi_sandbox_check(c->sb, c->text, c->size, c->msg);
    return NULL;
}

static enum dapi_err run(const char *text, size_t size, struct dapi_sandbox *sb, char **msg,
                         struct cb_arg *arg)
{
    *sb = (struct dapi_sandbox){.data_dir = DATA_DIR,
                                .is_layer = cb_is_layer,
                                .is_catalog_name = cb_is_catalog_name,
                                .arg = arg,
                                .paths = (char **)(uintptr_t)0x1, /* must be reset */
                                .npaths = 77};
    *msg = (char *)(uintptr_t)0x1;
    struct call c = {.text = text, .size = size, .sb = sb, .msg = msg, .r = (enum dapi_err) - 1};
    pthread_attr_t attr;
    pthread_t t;
    FUZZ_CHECK(pthread_attr_init(&attr) == 0 &&
                   pthread_attr_setstacksize(&attr, CHECK_STACK) == 0 &&
                   pthread_create(&t, &attr, call_check, &c) == 0 && pthread_join(t, NULL) == 0,
               "cannot run the check on a thread");
    pthread_attr_destroy(&attr);
    enum dapi_err r = c.r;
    FUZZ_CHECK(r == DAPI_OK || r == DAPI_ERR_SQL || r == DAPI_ERR_NOMEM, "unexpected result %d",
               (int)r);
    FUZZ_CHECK(r != DAPI_ERR_NOMEM, "DAPI_ERR_NOMEM although no allocation failed (msg %s)",
               *msg ? "set" : "NULL");
    FUZZ_CHECK((*msg != NULL) == (r == DAPI_ERR_SQL), "*msg %s with result %d",
               *msg ? "set" : "NULL", (int)r);
    FUZZ_CHECK(*msg != (char *)(uintptr_t)0x1, "*msg not written");
    FUZZ_CHECK((sb->paths == NULL) == (sb->npaths == 0), "paths %p with npaths %zu",
               (void *)sb->paths, sb->npaths);
    if(r != DAPI_OK) {
        FUZZ_CHECK(sb->paths == NULL && sb->npaths == 0, "paths left after a refusal");
        check_msg(*msg, memchr(text, '\\', size) != NULL);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int lists_checked;
    if(!lists_checked) {
        check_sorted(dapi_allow_scalar, dapi_allow_scalar_n, "dapi_allow_scalar");
        check_sorted(dapi_allow_lake_table, dapi_allow_lake_table_n, "dapi_allow_lake_table");
        check_sorted(dapi_allow_pure_table, dapi_allow_pure_table_n, "dapi_allow_pure_table");
        lists_checked = 1;
    }
    fz_begin(data, size);
    /* An exact-size copy: ASan reports any read past len (the tree need not end in NUL). */
    char *text = malloc(size ? size : 1);
    if(!text)
        return 0;
    memcpy(text, data, size);

    struct cb_arg arg = {.magic = CB_MAGIC};
    struct dapi_sandbox sb;
    char *msg;
    enum dapi_err r = run(text, size, &sb, &msg, &arg);

    if(r == DAPI_OK) {
        for(size_t i = 0; i < sb.npaths; i++) {
            const char *p = sb.paths[i];
            FUZZ_CHECK(p != NULL, "path %zu is NULL", i);
            FUZZ_CHECK(ref_path_ok(p), "BYPASS: path '%s' accepted outside the lake", p);
            FUZZ_CHECK(dapi_sandbox_path_problem(DATA_DIR, p) == NULL,
                       "path '%s' accepted but dapi_sandbox_path_problem refuses it", p);
        }
        json_error_t je;
        /* DuckDB writes non-finite constants as bare Infinity / -Infinity / NaN, which the
         * sandbox reads as numbers (334ef44); the reference reads them as 0, outside strings */
        char *fin = malloc(size ? size : 1);
        FUZZ_CHECK(fin != NULL, "out of memory");
        memcpy(fin, text, size);
        for(size_t i = 0, in_str = 0; i < size; i++) {
            if(in_str) {
                if(fin[i] == '\\')
                    i++;
                else if(fin[i] == '"')
                    in_str = 0;
            } else if(fin[i] == '"') {
                in_str = 1;
            } else if(size - i >= 8 && memcmp(fin + i, "Infinity", 8) == 0) {
                memcpy(fin + i, "0       ", 8);
                i += 7;
            } else if(size - i >= 3 && memcmp(fin + i, "NaN", 3) == 0) {
                memcpy(fin + i, "0  ", 3);
                i += 2;
            }
        }
        json_t *root = json_loadb(fin, size,
                                  JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
        free(fin);
        FUZZ_CHECK(root != NULL, "accepted text that jansson cannot parse: %s", je.text);
        const json_t *stmts = json_object_get(root, "statements");
        FUZZ_CHECK(json_is_false(json_object_get(root, "error")),
                   "accepted with \"error\" not false");
        FUZZ_CHECK(json_array_size(stmts) == 1, "accepted %zu statements", json_array_size(stmts));
        struct ref ref = {.root = root, .sb = &sb};
        collect_cte_names(&ref, stmts, 0);
        ref_walk(&ref, stmts, 0, 0);
        for(size_t i = 0; i < ref.nctes; i++)
            free(ref.ctes[i]);
        free(ref.ctes);
        free(ref.cte_len);
        json_decref(root);
    }

    /* The same tree again: the same verdict, message and paths. */
    struct dapi_sandbox sb2;
    char *msg2;
    enum dapi_err r2 = run(text, size, &sb2, &msg2, &arg);
    FUZZ_CHECK(r2 == r, "second call: %d, first: %d", (int)r2, (int)r);
    FUZZ_CHECK(!msg || strcmp(msg, msg2) == 0, "second call: another message");
    FUZZ_CHECK(sb2.npaths == sb.npaths, "second call: %zu paths, first %zu", sb2.npaths,
               sb.npaths);
    for(size_t i = 0; i < sb.npaths; i++)
        FUZZ_CHECK(strcmp(sb.paths[i], sb2.paths[i]) == 0, "second call: path %zu differs", i);

    dapi_sandbox_free(&sb);
    FUZZ_CHECK(sb.paths == NULL && sb.npaths == 0, "dapi_sandbox_free left paths");
    dapi_sandbox_free(&sb); /* twice is harmless */
    dapi_sandbox_free(&sb2);
    free(msg);
    free(msg2);
    free(text);
    return 0;
}
