//! What every local embedder must do, checked the same way for each (unit
//! tests only): unit vectors, meaning over words, a batch equal to its texts
//! embedded alone, input order kept, empty and over-long texts handled.

use super::Embedder;
use super::bert::{Local, Model};

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

fn assert_unit(v: &[f32]) {
    assert!(v.iter().all(|x| x.is_finite()), "non-finite component");
    let norm = dot(v, v).sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

/// Runs the checks on `e`'s synchronous batch call.
pub(crate) fn check_minilm<M: Model>(e: &Local<M>) {
    let embed = |texts: &[String]| e.embed_sync(texts);
    assert_eq!(e.dim(), 384);
    assert_eq!(e.model_id(), "all-MiniLM-L6-v2");
    let one = |text: &str| {
        let mut v = embed(&[text.to_string()]).expect("embedding");
        assert_eq!(v.len(), 1);
        v.remove(0)
    };

    let fact = "I adopted a beagle named Max";
    let v_fact = one(fact);
    assert_eq!(v_fact.len(), 384);
    assert_unit(&v_fact);

    let related = dot(&v_fact, &one("what pet does the user have?"));
    let unrelated = dot(&v_fact, &one("the quarterly tax filing deadline"));
    assert!(
        related > unrelated,
        "related {related} should beat unrelated {unrelated}"
    );

    // Longer and shorter neighbours force padding around `fact`; the
    // 400-word text must be truncated, not rejected.
    let batch: Vec<String> = vec![
        "a much longer sentence that will certainly need more tokens than the fact".into(),
        fact.into(),
        String::new(),
        "hi".into(),
        "word ".repeat(400),
    ];
    let got = embed(&batch).expect("batch embedding");
    assert_eq!(got.len(), batch.len());
    for v in &got {
        assert_eq!(v.len(), 384);
        assert_unit(v);
    }
    let d = max_diff(&got[1], &v_fact);
    assert!(d < 1e-4, "batched differs from single by {d}");
    // Results come back in input order, not length order.
    let d = max_diff(&got[3], &one("hi"));
    assert!(d < 1e-4, "order mix-up: {d}");
    assert_unit(&one(""));
    assert!(embed(&[]).expect("empty batch").is_empty());
}

/// The async call (on the blocking pool) gives what the sync one does.
pub(crate) async fn check_async_matches_sync<M: Model>(e: &Local<M>) {
    let texts = vec!["hello world".to_string(), "second".to_string()];
    let a = e.embed(texts.clone()).await.expect("async embedding");
    let b = e.embed_sync(&texts).expect("sync embedding");
    assert_eq!(a, b);
}
