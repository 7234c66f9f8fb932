//! Transaction poolers: whether one sits between mnemo and PostgreSQL, the
//! parameter types of statements sent unnamed through it, and the set-up
//! of a new connection that leaves nothing behind on the server.
//!
//! Through a transaction pooler nothing may outlive a transaction on a
//! server connection: no named prepared statement used across
//! transactions, no session `SET`, no session advisory lock, no `LISTEN`,
//! no temporary table. [`crate::db::statements`] sends statements unnamed;
//! this module supplies what that needs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use dashmap::DashMap;
use tokio_postgres::types::{Kind, Type};
use tokio_postgres::{Client, Error, SimpleQueryMessage};

/// Whether a transaction pooler stands between mnemo and the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// `transaction` when a separate direct URL is given (the pooled/direct
    /// pair of Neon and Supabase) or the URL looks pooled (port 6432 or
    /// 6543, a host with "pooler" in it); `none` otherwise.
    #[default]
    Auto,
    /// Statements go out unnamed; nothing is left on a server connection.
    Transaction,
    /// A direct connection: statements are prepared once and cached.
    None,
}

/// Whether statements must be pooler-safe, by the rule of [`Pooler::Auto`].
pub fn is_pooled(
    choice: Pooler,
    url: &tokio_postgres::Config,
    direct: Option<&tokio_postgres::Config>,
) -> bool {
    match choice {
        Pooler::Transaction => true,
        Pooler::None => false,
        Pooler::Auto => direct.is_some_and(|d| !same_target(url, d)) || looks_pooled(url),
    }
}

fn same_target(a: &tokio_postgres::Config, b: &tokio_postgres::Config) -> bool {
    a.get_hosts() == b.get_hosts()
        && a.get_ports() == b.get_ports()
        && a.get_dbname() == b.get_dbname()
        && a.get_user() == b.get_user()
}

/// PgBouncer's default port (6432), Supabase's transaction pooler (6543),
/// and Neon's `-pooler` host names.
fn looks_pooled(url: &tokio_postgres::Config) -> bool {
    let pooled_port = url.get_ports().iter().any(|p| matches!(p, 6432 | 6543));
    let pooled_host = url.get_hosts().iter().any(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => name.to_ascii_lowercase().contains("pooler"),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => false,
    });
    pooled_port || pooled_host
}

/// Parameter types by statement text, learned once per process.
static PARAM_TYPES: LazyLock<DashMap<String, Arc<[Type]>>> = LazyLock::new(DashMap::new);

/// More distinct statements than mnemo writes means text is being
/// generated without bound; start over rather than grow.
const MAX_LEARNED: usize = 4096;

static PROBES: AtomicU64 = AtomicU64::new(0);

/// The parameter types of `sql`, from the cache or learned through
/// `simple` (the connection's simple-query method).
///
/// One simple-query message prepares the statement under a name of its own,
/// reads its parameter types from `pg_prepared_statements` and deallocates
/// it: a pooler sends one message to one server connection, so nothing is
/// left there. (A named prepare through tokio-postgres would take two round
/// trips, which a pooler may send to two connections.)
pub(crate) async fn param_types<F, Fut>(simple: F, sql: &str) -> Result<Arc<[Type]>, Error>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Vec<SimpleQueryMessage>, Error>>,
{
    if let Some(types) = PARAM_TYPES.get(sql) {
        return Ok(types.clone());
    }
    let name = format!(
        "mnemo_probe_{}_{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    let probe = format!(
        "PREPARE {name} AS {sql};
         SELECT t.oid::int8, t.typname::text, n.nspname::text, t.typtype::text,
                (SELECT json_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid)::text,
                e.oid::int8, e.typname::text, en.nspname::text, e.typtype::text,
                (SELECT json_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = e.oid)::text
           FROM pg_prepared_statements p
           CROSS JOIN LATERAL unnest(p.parameter_types) WITH ORDINALITY AS a(ty, i)
           JOIN pg_type t ON t.oid = a.ty::oid
           JOIN pg_namespace n ON n.oid = t.typnamespace
           LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
           LEFT JOIN pg_namespace en ON en.oid = e.typnamespace
          WHERE p.name = '{name}'
          ORDER BY a.i;
         DEALLOCATE {name};"
    );
    let types: Arc<[Type]> = simple(probe)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(probed_type(row)),
            _ => None,
        })
        .collect::<Option<Vec<Type>>>()
        .unwrap_or_default()
        .into();
    if PARAM_TYPES.len() >= MAX_LEARNED {
        PARAM_TYPES.clear();
    }
    PARAM_TYPES.insert(sql.to_string(), types.clone());
    Ok(types)
}

/// One probed parameter: a built-in type by its OID, else the enum, array
/// or base type the columns describe (the name must match: our enums and
/// pgvector's types check it when encoding).
fn probed_type(row: &tokio_postgres::SimpleQueryRow) -> Option<Type> {
    let at = |base: usize| -> Option<Type> {
        let oid: u32 = row.get(base)?.parse().ok()?;
        if let Some(builtin) = Type::from_oid(oid) {
            return Some(builtin);
        }
        let name = row.get(base + 1)?.to_string();
        let schema = row.get(base + 2)?.to_string();
        let kind = match row.get(base + 3)? {
            "e" => Kind::Enum(serde_json::from_str(row.get(base + 4).unwrap_or("[]")).ok()?),
            _ => Kind::Simple,
        };
        Some(Type::new(name, oid, kind, schema))
    };
    let ty = at(0)?;
    // A custom array (e.g. `memory_kind[]`): its element comes second.
    match (ty.kind(), row.get(5)) {
        (Kind::Simple, Some(_)) => {
            let element = at(5)?;
            Some(Type::new(
                ty.name().to_string(),
                ty.oid(),
                Kind::Array(element),
                ty.schema().to_string(),
            ))
        }
        _ => Some(ty),
    }
}

/// The custom types mnemo's results carry. tokio-postgres looks up a
/// result column's unknown type with named statements of its own; [`warm`]
/// makes each new connection learn these inside one transaction.
const RESULT_TYPES: &[&str] = &[
    "memory_kind",
    "relation_kind",
    "message_role",
    "vector",
    "halfvec",
];

/// Sets up a new pooled connection: its type cache learns
/// [`RESULT_TYPES`] (those that exist yet) in one transaction, and the
/// named statements tokio-postgres prepared for that are deallocated before
/// it commits, so no server connection keeps one (another process's
/// statement of the same name would collide with it).
pub async fn warm(client: &Client) -> Result<(), Error> {
    client.batch_execute("BEGIN").await?;
    let result = learn_result_types(client).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client.batch_execute(end).await;
    result?;
    ended
}

async fn learn_result_types(client: &Client) -> Result<(), Error> {
    let present: Vec<String> = client
        .query_typed(
            "SELECT DISTINCT typname::text FROM pg_type WHERE typname = ANY($1)",
            &[(&RESULT_TYPES, Type::TEXT_ARRAY)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let columns: Vec<String> = present
        .iter()
        .map(|t| format!("NULL::{t} AS {t}, NULL::{t}[] AS {t}_list"))
        .collect();
    client
        .query_typed(&format!("SELECT {}", columns.join(", ")), &[])
        .await?;
    let mine = client
        .simple_query(
            "SELECT name FROM pg_prepared_statements WHERE NOT from_sql AND prepare_time >= now()",
        )
        .await?;
    let names: Vec<String> = mine
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        // tokio-postgres names its statements s<number>; anything else is
        // not ours to close.
        .filter(|n| n.len() > 1 && n.starts_with('s') && n[1..].bytes().all(|b| b.is_ascii_digit()))
        .collect();
    if !names.is_empty() {
        let close: Vec<String> = names
            .iter()
            .map(|n| format!("DEALLOCATE \"{n}\""))
            .collect();
        client.batch_execute(&close.join("; ")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn auto_sees_a_pooler_by_its_direct_twin_its_port_or_its_host() {
        let direct = cfg("postgres://u@db.internal:5432/app");
        assert!(!is_pooled(Pooler::Auto, &direct, None));
        assert!(!is_pooled(Pooler::Auto, &direct, Some(&direct)));
        assert!(is_pooled(
            Pooler::Auto,
            &cfg("postgres://u@bouncer.internal:5432/app"),
            Some(&direct)
        ));
        assert!(is_pooled(
            Pooler::Auto,
            &cfg("postgres://u@h:6432/app"),
            None
        ));
        assert!(is_pooled(
            Pooler::Auto,
            &cfg("postgres://u@h:6543/app"),
            None
        ));
        assert!(is_pooled(
            Pooler::Auto,
            &cfg("postgres://u@ep-cool-1234-pooler.eu-central-1.aws.neon.tech/app"),
            None
        ));
        assert!(!is_pooled(
            Pooler::None,
            &cfg("postgres://u@h:6432/app"),
            None
        ));
        assert!(is_pooled(Pooler::Transaction, &direct, None));
    }
}
