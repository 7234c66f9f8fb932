//! The page cursors of `list_memories` and `list_contexts`: the last row's
//! creation time in microseconds and its id, `<micros>_<uuid>`. Clients pass
//! them back unchanged; anything else is refused before it reaches SQL.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::output::ToolError;
use super::validate;

/// The cursor that continues after the row created at `created_at` with `id`.
pub(crate) fn encode(created_at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", created_at.timestamp_micros())
}

/// The (creation time, id) a cursor from [`encode`] holds. Its time must be
/// one the server could have given out (years 0001 to 9999, like every time
/// argument); chrono reads far wider instants than PostgreSQL can compare.
pub(crate) fn decode(text: &str) -> Result<(DateTime<Utc>, Uuid), ToolError> {
    let bad = || {
        ToolError::invalid(format!(
            "cursor {} is not one this server gave out: pass next_cursor from the previous page unchanged",
            validate::shown(text)
        ))
    };
    let (micros, id) = text.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros)
        .filter(validate::representable)
        .ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode(at, id)).unwrap(), (at, id));
        assert!(decode("garbage").is_err());
        assert!(decode("12_nope").is_err());
        // Instants chrono reads but no time argument may name: 4714 BC and
        // year 10000.
        assert!(decode(&format!("-210000000000000000_{id}")).is_err());
        assert!(decode(&format!("253402300800000000_{id}")).is_err());
        assert!(decode(&format!("253402300799999999_{id}")).is_ok());
    }
}
