-- description: The most-rated movies, with their mean rating
-- param: limit = 20
SELECT m.item_id, m.title, m.year, count(*) AS n_ratings, round(avg(r.rating), 3) AS mean_rating
FROM clean_ratings r
JOIN clean_movies m USING (item_id)
GROUP BY ALL
ORDER BY n_ratings DESC, m.item_id
LIMIT $limit;
