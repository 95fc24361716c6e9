/* The sample lake (`dapi sample-data`): a deterministic demo data set written as Parquet, CSV
 * and JSON files by a private DuckDB database. duckdb.h is included only under src/engine/
 * (here through engine_int.h). */
#include "engine/engine_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"


/* Deterministic: every value is arithmetic on the row number (no random(), no hash() whose
 * output could change between versions), and one thread keeps the row order of writes. */
static const char *const sample_sql[] = {
    "CREATE MACRO pick(l, i) AS l[1 + (i % len(l))]",
    "CREATE TABLE customers AS SELECT i AS customer_id, "
    " 'cus_' || lpad(i::VARCHAR, 7, '0') AS external_id, "
    " pick(['Ana','Bruno','Carla','Diego','Elisa','Felipe','Gabriela','Heitor','Isabela',"
    "'João','Karina','Lucas','Marina','Nicolas','Olívia','Pedro','Quésia','Rafael','Sofia',"
    "'Tiago'], i * 7) || ' ' || pick(['Silva','Santos','Oliveira','Souza','Rodrigues','Ferreira',"
    "'Alves','Pereira','Lima','Gomes','Costa','Ribeiro','Martins','Carvalho','Almeida',"
    "'Lopes','Soares','Fernandes','Vieira','Barbosa'], i * 13) AS name, "
    " 'customer' || i || '@example.com' AS email, "
    " pick(['BR','BR','BR','US','PT','AR','MX','CL'], i * 31) AS country, "
    " pick(['São Paulo','Rio de Janeiro','Belo Horizonte','Curitiba','Porto Alegre','Recife',"
    "'Salvador','Fortaleza','Lisboa','Austin'], i * 17) AS city, "
    " TIMESTAMP '2021-01-01 00:00:00' + to_seconds((i * 7919) % (3 * 365 * 86400)) + "
    "   to_microseconds((i * 104729) % 1000000) AS created_at, "
    " (i % 7) <> 0 AS is_active, "
    " pick(['free','starter','pro','enterprise'], i * 3) AS plan, "
    " CASE WHEN i % 11 = 0 THEN NULL ELSE pick(['web','mobile','partner','sales'], i) END "
    "   AS acquisition_channel "
    "FROM range(1, 100001) t(i)",
    "CREATE TABLE products AS SELECT i AS product_id, "
    " 'SKU-' || lpad(i::VARCHAR, 5, '0') AS sku, "
    " pick(['Camiseta','Caneca','Caderno','Mochila','Garrafa','Boné','Meia','Agenda'], i) || ' ' "
    "   || pick(['Azul','Verde','Preta','Branca','Vermelha'], i * 3) || ' #' || i AS name, "
    " pick(['vestuário','casa','papelaria','acessórios'], i) AS category, "
    " round(5 + ((i * 37) % 9500) / 100.0, 2)::DECIMAL(10,2) AS unit_price, "
    " (i % 13) <> 0 AS in_stock "
    "FROM range(1, 501) t(i)",
    "CREATE TABLE orders AS SELECT i AS order_id, "
    " 1 + (i * 48271) % 100000 AS customer_id, "
    " pick(['delivered','delivered','delivered','shipped','paid','cancelled','refunded'], i * 5) "
    "   AS status, "
    " pick(['site','app','marketplace','store'], i * 11) AS channel, "
    " TIMESTAMP '2022-01-01 00:00:00' + to_seconds((i * 2654435761) % (3 * 365 * 86400)) "
    "   AS ordered_at, "
    " 'BRL' AS currency "
    "FROM range(1, 400001) t(i)",
    "CREATE TABLE order_items AS SELECT i AS order_item_id, "
    " 1 + (i * 16807) % 400000 AS order_id, "
    " 1 + (i * 31) % 500 AS product_id, "
    " 1 + (i % 5) AS quantity, "
    " round(5 + ((((i * 31) % 500) + 1) * 37 % 9500) / 100.0, 2)::DECIMAL(10,2) AS unit_price, "
    " CASE WHEN i % 17 = 0 THEN round(((i * 7) % 2000) / 100.0, 2)::DECIMAL(10,2) ELSE 0 END "
    "   AS discount "
    "FROM range(1, 1000001) t(i)",
    "CREATE TABLE order_totals AS SELECT order_id, sum(quantity * unit_price - discount) AS total, "
    " count(*) AS items FROM order_items GROUP BY order_id",
    /* nekt_raw: as ingested (Parquet files, a partitioned Parquet folder, a CSV) */
    "COPY customers TO '%s/nekt_raw/customers.parquet' (FORMAT parquet)",
    "COPY orders TO '%s/nekt_raw/orders.parquet' (FORMAT parquet)",
    "COPY (SELECT oi.*, year(o.ordered_at) AS order_year FROM order_items oi "
    "      JOIN orders o USING (order_id) ORDER BY order_item_id) "
    " TO '%s/nekt_raw/order_items' (FORMAT parquet, PARTITION_BY (order_year))",
    "COPY products TO '%s/nekt_raw/products.csv' (HEADER)",
    /* nekt_trusted: cleaned and typed, with nested values */
    "COPY (SELECT customer_id, name, lower(email) AS email, "
    "  {'city': city, 'country': country} AS address, "
    "  CASE WHEN plan IN ('pro','enterprise') THEN ['paying', plan] ELSE [plan] END AS tags, "
    "  created_at::DATE AS signup_date, is_active, plan "
    " FROM customers ORDER BY customer_id) TO '%s/nekt_trusted/customers.parquet' (FORMAT parquet)",
    "COPY (SELECT o.order_id, o.customer_id, o.status, o.channel, o.ordered_at, "
    "  o.ordered_at::DATE AS order_date, COALESCE(t.total, 0)::DECIMAL(14,2) AS total_amount, "
    "  COALESCE(t.items, 0) AS item_count "
    " FROM orders o LEFT JOIN order_totals t USING (order_id) "
    " WHERE o.status <> 'cancelled' ORDER BY o.order_id) "
    " TO '%s/nekt_trusted/orders.parquet' (FORMAT parquet)",
    /* nekt_service: curated for BI */
    "COPY (SELECT o.ordered_at::DATE AS day, count(*) AS orders, "
    "  sum(t.total)::DECIMAL(18,2) AS revenue, round(avg(t.total), 2) AS avg_ticket "
    " FROM orders o JOIN order_totals t USING (order_id) "
    " WHERE o.status IN ('delivered','shipped','paid') GROUP BY ALL ORDER BY day) "
    " TO '%s/nekt_service/daily_revenue.parquet' (FORMAT parquet)",
    "COPY (SELECT c.customer_id, c.name, c.country, count(o.order_id) AS orders, "
    "  COALESCE(sum(t.total), 0)::DECIMAL(18,2) AS lifetime_value, "
    "  max(o.ordered_at) AS last_order_at "
    " FROM customers c LEFT JOIN orders o USING (customer_id) "
    " LEFT JOIN order_totals t USING (order_id) GROUP BY ALL ORDER BY c.customer_id) "
    " TO '%s/nekt_service/customer_lifetime_value.csv' (HEADER)",
};

enum dapi_err dapi_engine_sample_data(const char *dir, char *err, size_t errlen)
{
    enum dapi_err result = DAPI_ERR_INTERNAL;
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    duckdb_config cfg = NULL;
    char *open_err = NULL;
    struct dapi_buf b, q;
    dapi_buf_init(&b, 4096);
    dapi_buf_init(&q, 64 * 1024);

    const char *layers[] = {"", "/nekt_raw", "/nekt_trusted", "/nekt_service"};
    for(size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s%s", dir, layers[i]);
        if(mkdir(p, 0755) && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
            goto out;
        }
    }
    if(duckdb_create_config(&cfg) == DuckDBError ||
       duckdb_set_config(cfg, "threads", "1") == DuckDBError ||
       duckdb_set_config(cfg, "autoinstall_known_extensions", "false") == DuckDBError ||
       duckdb_set_config(cfg, "autoload_known_extensions", "false") == DuckDBError ||
       duckdb_open_ext(NULL, &db, cfg, &open_err) == DuckDBError ||
       duckdb_connect(db, &con) == DuckDBError) {
        snprintf(err, errlen, "cannot open DuckDB: %s", open_err ? open_err : "unknown");
        goto out;
    }
    /* The directory goes into COPY targets as a literal, without its quotes. */
    dapi_engine_sql_literal(&b, dir);
    if(!b.data) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    b.data[b.len - 1] = '\0';
    const char *lit = b.data + 1;
    exec(con, "SET preserve_insertion_order = true", NULL, 0);
    for(size_t i = 0; i < sizeof sample_sql / sizeof sample_sql[0]; i++) {
        dapi_buf_reset(&q);
        const char *s = sample_sql[i], *pct = strstr(s, "%s");
        if(pct) {
            dapi_buf_add(&q, s, (size_t)(pct - s));
            dapi_buf_adds(&q, lit);
            dapi_buf_adds(&q, pct + 2);
        } else {
            dapi_buf_adds(&q, s);
        }
        if(!q.data) {
            result = DAPI_ERR_NOMEM;
            goto out;
        }
        char qerr[1024];
        if(exec(con, q.data, qerr, sizeof qerr)) {
            snprintf(err, errlen, "sample data: %s", qerr);
            goto out;
        }
    }
    result = DAPI_OK;
out:
    if(open_err)
        duckdb_free(open_err);
    if(con)
        duckdb_disconnect(&con);
    if(db)
        duckdb_close(&db);
    if(cfg)
        duckdb_destroy_config(&cfg);
    dapi_buf_free(&b);
    dapi_buf_free(&q);
    return result;
}
