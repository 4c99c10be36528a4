//! Range requests on blobs: `bytes=a-b`, open-ended `bytes=a-`, suffix `bytes=-n`, ends past the
//! blob (clamped) -> 206 with the right Content-Range and bytes; unsatisfiable ranges -> 416
//! RANGE_INVALID JSON. A range on a cold blob is answered correctly too (206 slice or 200 whole).

mod common;

use common::*;

async fn get_range(client: &reqwest::Client, url: &str, range: &str) -> Resp {
    send(
        client.get(url).header("Range", range),
        &format!("GET {url} Range: {range}"),
    )
    .await
}

fn assert_partial(resp: &Resp, blob: &Blob, first: usize, last: usize, what: &str) {
    let n = blob.data.len();
    assert_eq!(resp.status, 206, "{what}: status, body {:?}", resp.text());
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes {first}-{last}/{n}")),
        "{what}: Content-Range"
    );
    assert_eq!(
        resp.header("content-length"),
        Some((last - first + 1).to_string()),
        "{what}: Content-Length"
    );
    assert!(
        resp.body[..] == blob.data[first..=last],
        "{what}: wrong bytes ({} bytes received)",
        resp.body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_requests_on_cached_blob() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(40).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.children[0].layers[0].clone();
        let n = blob.data.len();
        let target = fx.in_path(REPO);
        check_blob(&fx.client, &target, &blob).await;
        let url = target.blob_url(&blob.digest);

        let cases = [
            ("bytes=0-99".to_string(), 0, 99),
            ("bytes=1000-1999".to_string(), 1000, 1999),
            ("bytes=100-".to_string(), 100, n - 1),
            ("bytes=-10".to_string(), n - 10, n - 1),
            (format!("bytes={}-{}", n - 5, n + 100), n - 5, n - 1),
            (format!("bytes={}-{}", n - 1, n - 1), n - 1, n - 1),
        ];
        for (range, first, last) in cases {
            let resp = get_range(&fx.client, &url, &range).await;
            assert_partial(&resp, &blob, first, last, &format!("Range: {range}"));
        }

        for range in [
            format!("bytes={n}-"),
            format!("bytes={}-{}", n + 10, n + 20),
        ] {
            let resp = get_range(&fx.client, &url, &range).await;
            assert_error(&resp, 416, "RANGE_INVALID", &format!("Range: {range}"));
            assert_eq!(
                resp.header("content-range"),
                Some(format!("bytes */{n}")),
                "416 states the blob size (RFC 9110)"
            );
        }

        assert_eq!(
            fx.upstream.blob_gets(REPO, &blob.digest),
            1,
            "ranges must be served from cache"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_request_on_cold_blob_is_correct() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(41).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.children[1].layers[0].clone();
        let target = fx.in_path(REPO);
        let url = target.blob_url(&blob.digest);

        let resp = get_range(&fx.client, &url, "bytes=10-19").await;
        match resp.status {
            206 => assert_partial(&resp, &blob, 10, 19, "cold Range: bytes=10-19"),
            200 => assert_blob_response(&resp, &blob, false, "cold Range answered with 200"),
            s => panic!("cold Range: unexpected status {s}: {:?}", resp.text()),
        }
        check_blob(&fx.client, &target, &blob).await;
    })
    .await
}
