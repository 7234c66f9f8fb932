//! The knobs of memory search's ranking ([`Tuning`]): the RRF constant,
//! each list's weight, how far and how much score spreads to neighbouring
//! experiences. The
//! defaults are the values [`Tuning::DEFAULT`] names, chosen by
//! leave-one-conversation-out cross-validation on LoCoMo
//! (docs/BENCHMARKS.md, "Cross-validated recall"). A store's tuning can be
//! changed for experiments ([`super::Store::set_tuning`], hidden); no tool
//! argument reaches it, so the tools' contract does not depend on it.

/// How a memory search weighs its candidate lists (see `search`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// The RRF constant k: a list's rank r counts weight/(k + r).
    pub rrf_k: f64,
    /// Weight of the vector list.
    pub w_semantic: f64,
    /// Weight of the full-text list.
    pub w_keyword: f64,
    /// Weight of the list of memories inside the query's time windows.
    pub w_time: f64,
    /// Share of an experience's fused score passed to its nearest
    /// neighbouring experiences.
    pub neighbour: f64,
    /// How many of the best fused candidates spread score to neighbours.
    pub neighbour_pool: i64,
    /// How many experiences on each side receive it (1: the adjacent ones).
    pub neighbour_reach: i64,
    /// Each step further away multiplies the share by this.
    pub neighbour_falloff: f64,
}

impl Tuning {
    pub const DEFAULT: Tuning = Tuning {
        // Cormack et al. use 60; on LoCoMo a small k, which lets the top
        // ranks of each list count for more, did best (k=60: R@10 0.585,
        // k=20: 0.618, k=5: 0.652, k=4 with idf: 0.728).
        rrf_k: 4.0,
        // A hair more on meaning, so that a memory first by meaning and
        // second by words beats one first by words and second by meaning,
        // instead of tying.
        w_semantic: 1.001,
        w_keyword: 1.0,
        w_time: 1.0,
        // The turn of a conversation that answers a question often sits
        // next to the turn that matches its words.
        neighbour: 0.45,
        neighbour_pool: 50,
        // Two turns each side, both at the full share: leave-one-
        // conversation-out (mean of folds) R@5 0.653 -> 0.667, R@10
        // 0.746 -> 0.767; a falloff of 0.5 gave R@10 0.752, reach 3 0.764
        // in-sample (docs/BENCHMARKS.md, "Cross-validated recall").
        neighbour_reach: 2,
        neighbour_falloff: 1.0,
    };

    /// What decides the fusion statement's text (it inlines the values:
    /// literals keep the plan the planner makes for the defaults).
    pub(crate) fn key(&self) -> [u64; 8] {
        [
            self.rrf_k.to_bits(),
            self.w_semantic.to_bits(),
            self.w_keyword.to_bits(),
            self.w_time.to_bits(),
            self.neighbour.to_bits(),
            self.neighbour_pool as u64,
            self.neighbour_reach as u64,
            self.neighbour_falloff.to_bits(),
        ]
    }

    /// Whether the values are usable: finite, non-negative weights, k > 0,
    /// pool and reach of at least 1 and at most the candidate count.
    pub fn is_valid(&self) -> bool {
        let weights = [
            self.w_semantic,
            self.w_keyword,
            self.w_time,
            self.neighbour,
            self.neighbour_falloff,
        ];
        self.rrf_k.is_finite()
            && self.rrf_k > 0.0
            && weights.iter().all(|w| w.is_finite() && *w >= 0.0)
            && (1..=super::search::CANDIDATES).contains(&self.neighbour_pool)
            && (1..=10).contains(&self.neighbour_reach)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::Tuning;

    #[test]
    fn the_defaults_are_valid_and_values_out_of_range_are_not() {
        assert!(Tuning::DEFAULT.is_valid());
        let bad = [
            Tuning {
                rrf_k: 0.0,
                ..Tuning::DEFAULT
            },
            Tuning {
                w_keyword: -1.0,
                ..Tuning::DEFAULT
            },
            Tuning {
                neighbour: f64::NAN,
                ..Tuning::DEFAULT
            },
            Tuning {
                neighbour_reach: 0,
                ..Tuning::DEFAULT
            },
            Tuning {
                neighbour_pool: 101,
                ..Tuning::DEFAULT
            },
            Tuning {
                neighbour_falloff: f64::INFINITY,
                ..Tuning::DEFAULT
            },
        ];
        for t in bad {
            assert!(!t.is_valid(), "{t:?}");
        }
    }
}
